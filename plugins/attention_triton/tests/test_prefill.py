import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_attention_triton.prefill import TARGET_ROWS, paged_prefill  # noqa: E402

from pagedllm_core.attention.conformance import DTYPES, assert_matches_reference, reference_forward  # noqa: E402
from pagedllm_core.bench.attention import build_random_step  # noqa: E402

# (seq_lens, query_lens): each sequence's new tokens are the last query_len of its context.
FRESH_PROMPTS = ([1, 7, 33, TARGET_ROWS + 6], [1, 7, 33, TARGET_ROWS + 6])
CHUNKED_PREFILL = ([40, 90, 20], [8, 30, 20])
MIXED_WITH_DECODE_ROWS = ([50, 12, 33, 70], [1, 12, 1, 25])


def check_prefill(seq_lens, query_lens, dtype, block_size, query_group_size, head_size, num_kv_heads=2):
    step = build_random_step(
        seq_lens,
        query_lens,
        num_heads=num_kv_heads * query_group_size,
        num_kv_heads=num_kv_heads,
        head_size=head_size,
        block_size=block_size,
        dtype=dtype,
    )
    kv_cache, expected = reference_forward(step)
    output = paged_prefill(step.query, kv_cache, step.metadata, step.spec.scale)
    assert_matches_reference(output, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_size", [64, 80])
@pytest.mark.parametrize("query_group_size", [1, 2, 4])
@pytest.mark.parametrize("block_size", [16, 32])
def test_chunked_prefill_matches_reference(dtype, head_size, query_group_size, block_size):
    check_prefill(*CHUNKED_PREFILL, dtype, block_size, query_group_size, head_size)


@pytest.mark.parametrize("query_group_size", [1, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fresh_prompts_match_reference(dtype, query_group_size):
    check_prefill(*FRESH_PROMPTS, dtype, 16, query_group_size, 80)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mixed_prefill_and_decode_rows_match_reference(dtype):
    check_prefill(*MIXED_WITH_DECODE_ROWS, dtype, 32, 2, 64)


@pytest.mark.parametrize("head_size", [96, 128])
def test_prefill_other_head_sizes(head_size):
    check_prefill(*CHUNKED_PREFILL, torch.float16, 16, 2, head_size)


def test_query_group_larger_than_a_tile():
    check_prefill(*CHUNKED_PREFILL, torch.float32, 16, TARGET_ROWS * 2, 64, num_kv_heads=1)

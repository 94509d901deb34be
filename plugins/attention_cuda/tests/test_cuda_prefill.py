import pytest
import torch
from cuda_attention_checks import HEAD_SIZES, cuda_step, needs_cuda

from pagedllm_core.attention.conformance import DTYPES, assert_matches_reference, reference_forward

pytestmark = needs_cuda

# (seq_lens, query_lens): each sequence's new tokens are the last query_len of its context.
# The 16-row query tiles are cut mid-sequence; 70 rows need five tiles, the last one partial.
FRESH_PROMPTS = ([1, 7, 33, 70], [1, 7, 33, 70])
CHUNKED_PREFILL = ([40, 90, 20], [8, 30, 20])
MIXED_WITH_DECODE_ROWS = ([50, 12, 33, 70], [1, 12, 1, 25])


def check_prefill(seq_lens, query_lens, dtype, block_size, query_group_size, head_size, num_kv_heads=2):
    from pagedllm_attention_cuda.kernels import load_kernels

    step = cuda_step(
        seq_lens,
        query_lens,
        num_heads=num_kv_heads * query_group_size,
        num_kv_heads=num_kv_heads,
        head_size=head_size,
        block_size=block_size,
        dtype=dtype,
    )
    kv_cache, expected = reference_forward(step)
    metadata = step.metadata
    output = load_kernels().paged_prefill(
        step.query,
        kv_cache,
        metadata.block_tables,
        metadata.seq_lens,
        metadata.query_start_loc,
        step.spec.scale,
        metadata.max_query_len,
    )
    assert_matches_reference(output, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_size", HEAD_SIZES)
@pytest.mark.parametrize("query_group_size", [1, 4])
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


def test_long_prompt_over_a_long_cached_context():
    check_prefill([3000, 600], [700, 600], torch.bfloat16, 16, 4, 128)

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_attention_triton.decode import BLOCK_N, DecodeSplit, paged_decode, plan_decode_split  # noqa: E402

from pagedllm_core.attention.conformance import DTYPES, assert_matches_reference, reference_forward  # noqa: E402
from pagedllm_core.bench.attention import build_random_step  # noqa: E402

# One token, exactly one block, a partial last block, several blocks, several key tiles.
SEQ_LENS = [1, 16, 17, 40, 2 * BLOCK_N + 5]
NUM_KV_HEADS = 2


def decode_step(dtype, block_size, query_group_size, head_size, seed=0):
    return build_random_step(
        SEQ_LENS,
        [1] * len(SEQ_LENS),
        num_heads=NUM_KV_HEADS * query_group_size,
        num_kv_heads=NUM_KV_HEADS,
        head_size=head_size,
        block_size=block_size,
        dtype=dtype,
        seed=seed,
    )


def check_decode(step, split):
    kv_cache, expected = reference_forward(step)
    output = paged_decode(step.query, kv_cache, step.metadata, step.spec.scale, split)
    assert_matches_reference(output, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_size", [64, 80])
@pytest.mark.parametrize("query_group_size", [1, 2, 4])
@pytest.mark.parametrize("block_size", [16, 32])
def test_decode_matches_reference(dtype, head_size, query_group_size, block_size):
    step = decode_step(dtype, block_size, query_group_size, head_size)
    max_seq_len = step.metadata.max_seq_len
    check_decode(step, DecodeSplit(1, max_seq_len))
    # Partitions smaller than a key tile and not aligned to blocks; short sequences leave later
    # partitions empty, which the reduction must ignore.
    check_decode(step, DecodeSplit(-(-max_seq_len // 24), 24))


@pytest.mark.parametrize("head_size", [96, 128])
def test_decode_other_head_sizes(head_size):
    step = decode_step(torch.float16, 16, 2, head_size)
    check_decode(step, DecodeSplit(1, step.metadata.max_seq_len))
    check_decode(step, DecodeSplit(3, BLOCK_N))


def test_split_decode_of_long_context_single_sequence():
    step = build_random_step(
        [1000], [1], num_heads=8, num_kv_heads=2, head_size=64, block_size=16, dtype=torch.float32, seed=3
    )
    split = plan_decode_split(num_seqs=1, num_kv_heads=2, max_seq_len=1000, num_target_programs=264)
    assert split.num_splits > 1
    check_decode(step, split)


def test_plan_splits_only_when_the_device_would_idle():
    assert plan_decode_split(num_seqs=256, num_kv_heads=8, max_seq_len=8192, num_target_programs=264).num_splits == 1
    assert plan_decode_split(num_seqs=1, num_kv_heads=8, max_seq_len=200, num_target_programs=264).num_splits == 1

    split = plan_decode_split(num_seqs=1, num_kv_heads=8, max_seq_len=8192, num_target_programs=264)
    assert split.num_splits == 32
    assert split.partition_size % BLOCK_N == 0
    assert split.num_splits * split.partition_size >= 8192 > (split.num_splits - 1) * split.partition_size

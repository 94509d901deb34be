import pytest
import torch
from cuda_attention_checks import HEAD_SIZES, cuda_step, needs_cuda
from pagedllm_attention_cuda.decode_plan import plan_decode_partitions

from pagedllm_core.attention.conformance import DTYPES, assert_matches_reference, reference_forward

pytestmark = needs_cuda

# One token, exactly one block, a partial last block, several blocks, more than one 64-position partition.
SEQ_LENS = [1, 16, 17, 40, 133]
NUM_KV_HEADS = 2


def decode_step(dtype, block_size, query_group_size, head_size, seq_lens=SEQ_LENS, num_kv_heads=NUM_KV_HEADS, seed=0):
    return cuda_step(
        seq_lens,
        [1] * len(seq_lens),
        num_heads=num_kv_heads * query_group_size,
        num_kv_heads=num_kv_heads,
        head_size=head_size,
        block_size=block_size,
        dtype=dtype,
        seed=seed,
    )


def check_decode(step, partition_size):
    from pagedllm_attention_cuda.kernels import load_kernels

    kv_cache, expected = reference_forward(step)
    metadata = step.metadata
    num_partitions = -(-metadata.max_seq_len // partition_size)
    output = load_kernels().paged_decode(
        step.query, kv_cache, metadata.block_tables, metadata.seq_lens, step.spec.scale, partition_size, num_partitions
    )
    assert_matches_reference(output, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_size", HEAD_SIZES)
@pytest.mark.parametrize("query_group_size", [1, 4])
@pytest.mark.parametrize("block_size", [16, 32])
def test_decode_matches_reference(dtype, head_size, query_group_size, block_size):
    step = decode_step(dtype, block_size, query_group_size, head_size)
    # One partition for the whole context (the V1 shape), then partitions that are shorter than a
    # block or not aligned to blocks; short sequences leave later partitions empty, which the
    # reduction must ignore.
    check_decode(step, 512)
    check_decode(step, 24)
    check_decode(step, 64)


@pytest.mark.parametrize("query_group_size", [2, 8, 12, 16])
def test_decode_query_groups_of_every_size(query_group_size):
    # Above 8 heads a group is split over several thread blocks, the last one partly filled.
    step = decode_step(torch.float32, 16, query_group_size, 128, num_kv_heads=1)
    check_decode(step, 512)
    check_decode(step, 32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_long_context_uses_many_partitions(dtype):
    step = decode_step(dtype, 16, 4, 128, seq_lens=[5000, 1200, 7], num_kv_heads=2, seed=3)
    plan = plan_decode_partitions(3, 8, 2, 5000, num_target_blocks=264)
    assert plan.num_partitions > 8
    check_decode(step, plan.partition_size)
    check_decode(step, 512)

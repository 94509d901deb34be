import pytest
import torch
from cuda_attention_checks import cuda_step, needs_cuda
from pagedllm_attention_cuda.decode_plan import DecodePartitions

from pagedllm_core.attention.conformance import assert_matches_reference, reference_forward

pytestmark = needs_cuda


def random_step(seq_lens, query_lens, block_size=16, dtype=torch.float16):
    return cuda_step(
        seq_lens, query_lens, num_heads=8, num_kv_heads=2, head_size=128, block_size=block_size, dtype=dtype
    )


def run_backend(step, partitions=None):
    from pagedllm_attention_cuda.backend import CudaAttentionBackend

    backend = CudaAttentionBackend(step.spec)
    backend.prepare(step.metadata)
    if partitions is not None:
        step.metadata.backend_data = partitions
    kv_cache = step.kv_cache.clone()
    output = backend.forward(step.query, step.key, step.value, kv_cache, step.metadata)
    return kv_cache, output


# The kernels take any block size, not only powers of two.
@pytest.mark.parametrize("block_size", [16, 32, 24])
@pytest.mark.parametrize(
    ("seq_lens", "query_lens"),
    [([5, 40, 70], [5, 12, 1]), ([23, 64, 2000], [1, 1, 1])],
    ids=["mixed", "decode"],
)
def test_forward_writes_the_cache_and_attends_like_the_reference(seq_lens, query_lens, block_size):
    step = random_step(seq_lens, query_lens, block_size)
    expected_cache, expected = reference_forward(step)

    kv_cache, output = run_backend(step)

    assert torch.equal(kv_cache, expected_cache)
    assert_matches_reference(output, expected)


def test_prepare_plans_decode_steps_only():
    decode = random_step([30, 3], [1, 1])
    prefill = random_step([30, 3], [2, 1])
    run_backend(decode)
    run_backend(prefill)
    assert isinstance(decode.metadata.backend_data, DecodePartitions)
    assert prefill.metadata.backend_data is None


def test_forward_follows_a_partitioned_plan():
    step = random_step([23, 64, 130], [1, 1, 1], dtype=torch.bfloat16)
    _, expected = reference_forward(step)
    _, output = run_backend(step, DecodePartitions(partition_size=48, num_partitions=3))
    assert_matches_reference(output, expected)

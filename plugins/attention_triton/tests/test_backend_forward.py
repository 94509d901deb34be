import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_attention_triton.backend import TritonAttentionBackend  # noqa: E402
from pagedllm_attention_triton.decode import DecodeSplit  # noqa: E402

from pagedllm_core.attention.conformance import assert_matches_reference, reference_forward  # noqa: E402
from pagedllm_core.bench.attention import build_random_step  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_step(seq_lens, query_lens, block_size=16):
    return build_random_step(
        seq_lens,
        query_lens,
        num_heads=4,
        num_kv_heads=2,
        head_size=64,
        block_size=block_size,
        dtype=torch.float32,
        device=DEVICE,
    )


def run_backend(step, decode_split=None):
    backend = TritonAttentionBackend(step.spec)
    backend.prepare(step.metadata)
    if decode_split is not None:
        step.metadata.backend_data = decode_split
    kv_cache = step.kv_cache.clone()
    output = backend.forward(step.query, step.key, step.value, kv_cache, step.metadata)
    return kv_cache, output


# The kernels take any block size, not only powers of two.
@pytest.mark.parametrize("block_size", [16, 24])
@pytest.mark.parametrize(
    ("seq_lens", "query_lens"),
    [([5, 40, 70], [5, 12, 1]), ([23, 64], [1, 1])],
    ids=["mixed", "decode"],
)
def test_forward_writes_the_cache_and_attends_like_the_reference(seq_lens, query_lens, block_size):
    step = random_step(seq_lens, query_lens, block_size)
    expected_cache, expected = reference_forward(step)

    kv_cache, output = run_backend(step)

    assert torch.equal(kv_cache, expected_cache)
    assert_matches_reference(output, expected)


def test_prepare_plans_decode_steps_only():
    backend = TritonAttentionBackend(random_step([3], [1]).spec)
    decode = random_step([30, 3], [1, 1]).metadata
    prefill = random_step([30, 3], [2, 1]).metadata
    backend.prepare(decode)
    backend.prepare(prefill)
    assert isinstance(decode.backend_data, DecodeSplit)
    assert prefill.backend_data is None


def test_forward_follows_a_split_decode_plan():
    step = random_step([23, 64, 130], [1, 1, 1])
    _, expected = reference_forward(step)
    _, output = run_backend(step, decode_split=DecodeSplit(num_splits=3, partition_size=64))
    assert_matches_reference(output, expected)

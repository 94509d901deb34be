import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_attention_triton.cache_write import write_kv_cache  # noqa: E402

from pagedllm_core.attention.conformance import reference_forward  # noqa: E402
from pagedllm_core.bench.attention import build_random_step  # noqa: E402


@pytest.mark.parametrize(
    ("cache_dtype", "input_dtype", "block_size", "num_kv_heads", "head_size"),
    [
        (torch.float32, torch.float32, 16, 2, 64),
        (torch.float16, torch.float16, 32, 4, 80),
        (torch.bfloat16, torch.bfloat16, 16, 1, 128),
        (torch.bfloat16, torch.float32, 32, 3, 96),
        (torch.float16, torch.float32, 16, 2, 80),
    ],
)
def test_write_matches_reference(cache_dtype, input_dtype, block_size, num_kv_heads, head_size):
    # Prefill, chunked prefill and decode rows: new tokens start mid-block and cross block edges.
    step = build_random_step(
        [19, 45, 3, 70],
        [19, 12, 1, 33],
        num_heads=num_kv_heads,
        num_kv_heads=num_kv_heads,
        head_size=head_size,
        block_size=block_size,
        dtype=cache_dtype,
    )
    step.key = step.key.to(input_dtype)
    step.value = step.value.to(input_dtype)
    expected_cache, _ = reference_forward(step)

    kv_cache = step.kv_cache.clone()
    write_kv_cache(step.key, step.value, kv_cache, step.metadata.slot_mapping)

    assert torch.equal(kv_cache, expected_cache)


def test_write_follows_strided_inputs():
    # Keys and values sliced out of a fused projection are not contiguous.
    step = build_random_step([9], [9], num_heads=2, num_kv_heads=2, head_size=64, block_size=16, dtype=torch.float32)
    fused = torch.cat([step.key, step.value], dim=-1)
    key, value = fused[..., :64], fused[..., 64:]
    expected_cache, _ = reference_forward(step)

    kv_cache = step.kv_cache.clone()
    write_kv_cache(key, value, kv_cache, step.metadata.slot_mapping)

    assert torch.equal(kv_cache, expected_cache)

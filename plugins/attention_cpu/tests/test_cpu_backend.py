import pytest
import torch

from pagedllm_attention_cpu.backend import CpuAttentionBackend
from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.attention.reference import paged_attention, write_kv_cache
from pagedllm_core.bench.attention import build_random_step

# (rtol, atol) against the torch reference in the same dtype; half-precision outputs are rounded by both.
TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}


def run_both(seq_lens, query_lens, dtype=torch.float32, num_heads=6, num_kv_heads=2, head_size=64, block_size=16):
    step = build_random_step(
        seq_lens, query_lens, num_heads=num_heads, num_kv_heads=num_kv_heads, head_size=head_size,
        block_size=block_size, dtype=dtype,
    )
    expected_cache = step.kv_cache.clone()
    write_kv_cache(step.key, step.value, expected_cache, step.metadata.slot_mapping)
    expected = paged_attention(step.query, expected_cache, step.metadata, step.spec.scale)

    backend = CpuAttentionBackend(step.spec)
    backend.prepare(step.metadata)
    cache = step.kv_cache.clone()
    actual = backend.forward(step.query, step.key, step.value, cache, step.metadata)
    return actual, expected, cache, expected_cache


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize(
    "seq_lens, query_lens",
    [
        ([1], [1]),  # a one-token context
        ([37, 200, 16, 5], [1, 1, 1, 1]),  # decode only, partial and full last blocks
        ([40, 9], [40, 9]),  # fresh prompts (causal on their own keys)
        ([300, 70, 33, 128], [1, 50, 1, 128]),  # decode rows mixed with a later chunk and a fresh prompt
    ],
)
def test_matches_reference(dtype, seq_lens, query_lens):
    actual, expected, cache, expected_cache = run_both(seq_lens, query_lens, dtype)
    assert torch.equal(cache, expected_cache)
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("num_heads, num_kv_heads, head_size, block_size", [(4, 4, 32, 16), (8, 1, 128, 8), (9, 3, 80, 24)])
def test_head_layouts_and_block_sizes(num_heads, num_kv_heads, head_size, block_size):
    actual, expected, _, _ = run_both(
        [90, 17, 64], [1, 17, 3], num_heads=num_heads, num_kv_heads=num_kv_heads, head_size=head_size,
        block_size=block_size,
    )
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_reports_why_it_cannot_run():
    spec = AttentionSpec(num_heads=6, num_kv_heads=4, head_size=64, scale=0.125, block_size=16,
                         kv_cache_dtype=torch.float64, device=torch.device("meta"))
    reasons = CpuAttentionBackend.unsupported_reasons(spec)
    assert len(reasons) == 3
    assert any("cpu only" in reason for reason in reasons)

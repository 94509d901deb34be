"""Shared by the kernel tests: skipping without a GPU, the reference result of a step, tolerances."""

from __future__ import annotations

import pytest
import torch

from pagedllm_core.attention.reference import paged_attention, write_kv_cache
from pagedllm_core.bench.attention import RandomStep, build_random_step

# (rtol, atol) against the reference run in the same dtype, as for the Triton kernels. The kernels
# accumulate in float32; half-precision outputs are rounded by both sides.
TOLERANCES = {
    torch.float32: (1e-4, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}
DTYPES = list(TOLERANCES)
HEAD_SIZES = [64, 80, 96, 128, 256]

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: these tests need a GPU (scripts/gpu_check.sh runs them on one)"
)


def cuda_step(seq_lens, query_lens, *, num_heads, num_kv_heads, head_size, block_size, dtype, seed=0) -> RandomStep:
    return build_random_step(
        seq_lens,
        query_lens,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_size=head_size,
        block_size=block_size,
        dtype=dtype,
        device="cuda",
        seed=seed,
    )


def reference_forward(step: RandomStep) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's (kv_cache after the write, attention output) for ``step``, leaving it untouched."""
    kv_cache = step.kv_cache.clone()
    write_kv_cache(step.key, step.value, kv_cache, step.metadata.slot_mapping)
    return kv_cache, paged_attention(step.query, kv_cache, step.metadata, step.spec.scale)


def assert_matches_reference(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    rtol, atol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)

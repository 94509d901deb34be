"""Checking an attention kernel against the torch reference: the oracle and the tolerances.

Every backend's kernel tests (the Triton and CUDA plugins', and a third party's) compare with
:func:`reference_forward` on steps from :func:`pagedllm_core.bench.attention.build_random_step`.
"""

from __future__ import annotations

import torch

from pagedllm_core.attention.reference import paged_attention, write_kv_cache
from pagedllm_core.bench.attention import RandomStep

# (rtol, atol) against the reference run in the same dtype. Kernels accumulate in float32; half-precision
# outputs are rounded to the dtype by both sides, so a one-ulp difference near 1.0 must pass.
TOLERANCES = {
    torch.float32: (1e-4, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}

DTYPES = list(TOLERANCES)


def reference_forward(step: RandomStep) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's (kv_cache after the write, attention output) for ``step``, leaving it untouched."""
    kv_cache = step.kv_cache.clone()
    write_kv_cache(step.key, step.value, kv_cache, step.metadata.slot_mapping)
    return kv_cache, paged_attention(step.query, kv_cache, step.metadata, step.spec.scale)


def assert_matches_reference(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """``actual`` equals the reference's ``expected`` in dtype and shape, and within the dtype's tolerance."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    rtol, atol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)

"""Shared by the kernel tests: skipping without a GPU, the head sizes, steps built on the GPU."""

from __future__ import annotations

import pytest
import torch

from pagedllm_core.bench.attention import RandomStep, build_random_step

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

"""Checking an attention kernel against the torch reference: the oracle and the tolerances.

Every backend's kernel tests (the Triton and CUDA plugins', and a third party's) compare with
:func:`reference_forward` on steps from :func:`pagedllm_core.bench.attention.build_random_step`; the
checks all backends share (the cache write, greedy generation against the torch backend) live here too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.reference import paged_attention, write_kv_cache
from pagedllm_core.bench.attention import RandomStep, build_random_step

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


# A backend's cache write: (key, value, kv_cache, slot_mapping) -> None, writing in place.
CacheWrite = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]

# (cache dtype, input dtype, block size, KV heads, head size) every cache write is checked on.
CACHE_WRITE_CASES = [
    (torch.float32, torch.float32, 16, 2, 64),
    (torch.float16, torch.float16, 32, 4, 80),
    (torch.bfloat16, torch.bfloat16, 16, 1, 128),
    (torch.bfloat16, torch.float32, 32, 3, 96),
    (torch.float16, torch.float32, 16, 2, 80),
]


def check_cache_write(write: CacheWrite, case: tuple, device: str = "cpu") -> None:
    """``write`` puts a step's keys and values where the reference does, bit for bit: prefill, chunked
    prefill and decode rows whose new tokens start mid-block and cross block edges, in ``case``."""
    cache_dtype, input_dtype, block_size, num_kv_heads, head_size = case
    step = build_random_step(
        [19, 45, 3, 70], [19, 12, 1, 33], num_heads=num_kv_heads, num_kv_heads=num_kv_heads, head_size=head_size,
        block_size=block_size, dtype=cache_dtype, device=device,
    )
    step.key, step.value = step.key.to(input_dtype), step.value.to(input_dtype)
    expected_cache, _ = reference_forward(step)
    kv_cache = step.kv_cache.clone()
    write(step.key, step.value, kv_cache, step.metadata.slot_mapping)
    assert torch.equal(kv_cache, expected_cache)


def check_cache_write_of_strided_inputs(write: CacheWrite, dtype: torch.dtype, device: str = "cpu") -> None:
    """Keys and values sliced out of a fused projection (not contiguous) are written like contiguous ones."""
    step = build_random_step([9], [9], num_heads=2, num_kv_heads=2, head_size=64, block_size=16, dtype=dtype,
                             device=device)
    fused = torch.cat([step.key, step.value], dim=-1)
    expected_cache, _ = reference_forward(step)
    kv_cache = step.kv_cache.clone()
    write(fused[..., :64], fused[..., 64:], kv_cache, step.metadata.slot_mapping)
    assert torch.equal(kv_cache, expected_cache)


GENERATION_PROMPTS = ["The quick brown fox", "Hello, world! How are", "Once upon a time there was a little model that"]


def greedy_token_ids(
    model_dir: Path, attention_backend: str, max_num_batched_tokens: int, device: str = "cpu"
) -> tuple[str, list[list[int]]]:
    """The class name of the backend that ran and its 8 greedy tokens per :data:`GENERATION_PROMPTS`, float32.

    A budget of 8 tokens splits the prompts into chunks: prefill over cached context, mixed batches."""
    from pagedllm_core import LLM, SamplingParams

    llm = LLM(
        model=str(model_dir), device=device, attention_backend=attention_backend, dtype="float32", num_kv_blocks=64,
        max_num_batched_tokens=max_num_batched_tokens,
    )
    backend = type(llm.llm_engine.executor.worker.model_runner.attention).__name__
    outputs = llm.generate(GENERATION_PROMPTS, SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)
    return backend, [output.outputs[0].token_ids for output in outputs]


def check_native_decode(backend: AttentionBackend, step: RandomStep, kv_scales: tuple | None = None) -> None:
    """The backend's :meth:`~AttentionBackend.native_decode_op`, called as the decoder program calls it, writes the
    same cache bytes and returns the same output, bit for bit, as its ``forward`` on ``step``, a plain decode
    step (``kv_scales``: an fp8 cache's scales, as :func:`pagedllm_core.attention.fp8_conformance.fp8_step`
    fits them)."""
    operator = _torch_operator(backend.native_decode_op())
    backend.prepare(step.metadata)
    expected_cache = step.kv_cache.clone()
    scales = {} if kv_scales is None else {"kv_scales": kv_scales}
    expected = backend.forward(step.query, step.key, step.value, expected_cache, step.metadata, **scales)
    k_scale, v_scale = kv_scales or (torch.ones((), dtype=torch.float32),) * 2
    cache = step.kv_cache.clone()
    actual = operator(step.query, step.key, step.value, cache, k_scale, v_scale,
                      *backend.native_step_arguments(step.metadata))
    assert torch.equal(cache.view(torch.uint8), expected_cache.view(torch.uint8))
    assert torch.equal(actual, expected)


def _torch_operator(name: str):
    namespace, operator = name.split("::")
    return getattr(getattr(torch.ops, namespace), operator)

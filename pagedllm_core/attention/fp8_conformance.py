"""Checking an attention backend's FP8 KV cache against the torch reference (our tests', and plugins').

The oracle is independent of any fp8 reading code: the backend writes a step into an fp8 cache,
the cache is dequantized (bytes times scale) into a cache of the model's dtype, and the reference
attends over that. A backend passes when its output matches within the model dtype's tolerance
and what it wrote equals the reference's quantization (to within one fp8 step where rounding of
the last bit may differ, as in Triton's interpreter).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.kv_quant import dequantize_kv, quantize_kv, scale_from_amax
from pagedllm_core.attention.reference import KVScales, paged_attention, write_kv_cache
from pagedllm_core.bench.attention import RandomStep


@dataclass
class Fp8Comparison:
    """A backend's output and cache for an fp8 step, and what the reference makes of the same step."""

    output: torch.Tensor  # the backend's attention output
    expected_output: torch.Tensor  # the reference's, over the backend's cache dequantized
    cache: torch.Tensor  # the backend's cache after its write, dequantized
    expected_cache: torch.Tensor  # the reference's write into the same cache, dequantized


def fp8_step(step: RandomStep, cache_dtype: torch.dtype) -> tuple[RandomStep, KVScales]:
    """``step`` with its random cache held in ``cache_dtype`` and per-layer scales fitted to its keys and
    values (as ``calculate_kv_scales`` fits them); the query, keys and values keep the model's dtype."""
    model_dtype = step.spec.model_dtype
    kv_scales = (scale_from_amax(step.key, cache_dtype), scale_from_amax(step.value, cache_dtype))
    cache = torch.stack([quantize_kv(step.kv_cache[index], kv_scales[index], cache_dtype) for index in (0, 1)])
    spec = dataclasses.replace(step.spec, kv_cache_dtype=cache_dtype, dtype=model_dtype)
    return dataclasses.replace(step, spec=spec, kv_cache=cache), kv_scales


def compare_fp8_backend(backend: AttentionBackend, step: RandomStep, kv_scales: KVScales) -> Fp8Comparison:
    """Run ``backend`` (built for ``step.spec``) on an fp8 step from :func:`fp8_step` and the reference beside it."""
    dtype = step.spec.model_dtype
    cache = step.kv_cache.clone()
    backend.prepare(step.metadata)
    output = backend.forward(step.query, step.key, step.value, cache, step.metadata, kv_scales=kv_scales)

    expected_cache = step.kv_cache.clone()
    write_kv_cache(step.key, step.value, expected_cache, step.metadata.slot_mapping, kv_scales)
    dequantized = _dequantize_cache(cache, kv_scales, dtype)
    expected_output = paged_attention(step.query, dequantized, step.metadata, step.spec.scale)
    return Fp8Comparison(output, expected_output, dequantized, _dequantize_cache(expected_cache, kv_scales, dtype))


def _dequantize_cache(cache: torch.Tensor, kv_scales: KVScales, dtype: torch.dtype) -> torch.Tensor:
    return torch.stack([dequantize_kv(cache[index], kv_scales[index], dtype) for index in (0, 1)])

"""The FP8 KV cache: its dtypes, per-layer scales, and what quantizing keys and values means.

A layer keeps keys as ``fp8(key / k_scale)`` and values as ``fp8(value / v_scale)``, with one float32
scale per layer for each (vLLM's per-tensor scheme); reading multiplies the scale back. Values beyond
the fp8 range saturate at its largest finite value instead of becoming NaN.
"""

from __future__ import annotations

import torch

# EngineConfig.kv_cache_dtype values (vLLM's) -> the torch dtype the cache holds; "fp8" is E4M3.
FP8_KV_CACHE_DTYPES = {
    "fp8": torch.float8_e4m3fn,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

# A scale is never below this, so an all-zero first batch cannot give a zero (dividing) scale.
MIN_KV_SCALE = 1e-6


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


def kv_cache_torch_dtype(kv_cache_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """The torch dtype of the cache for an ``EngineConfig.kv_cache_dtype`` value (``auto``: the model's)."""
    if kv_cache_dtype == "auto":
        return model_dtype
    if kv_cache_dtype in FP8_KV_CACHE_DTYPES:
        return FP8_KV_CACHE_DTYPES[kv_cache_dtype]
    return getattr(torch, kv_cache_dtype)


def fp8_max(dtype: torch.dtype) -> float:
    """The largest finite value of an fp8 dtype (448 for E4M3, 57344 for E5M2)."""
    return float(torch.finfo(dtype).max)


def quantize_kv(tensor: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor / scale`` in ``dtype``, saturated to its finite range."""
    limit = fp8_max(dtype)
    return (tensor.float() / scale).clamp_(-limit, limit).to(dtype)


def dequantize_kv(tensor: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cache contents back in ``dtype``: ``tensor * scale``."""
    return (tensor.float() * scale).to(dtype)


def scale_from_amax(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The scale that maps the largest magnitude in ``tensor`` to the top of the fp8 range (amax / fp8 max)."""
    return (tensor.detach().abs().amax().float() / fp8_max(dtype)).clamp(min=MIN_KV_SCALE)

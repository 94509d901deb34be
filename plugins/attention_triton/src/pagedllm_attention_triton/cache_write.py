"""Kernel that stores a step's new keys and values into their slots of the paged KV cache."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedllm_attention_triton.attend import kv_scale_tensors
from pagedllm_core.attention.kv_quant import fp8_max, is_fp8


# fp8 dtype -> (mantissa bits, exponent of the smallest normal value).
FP8_FORMATS = {torch.float8_e4m3fn: (3, -6), torch.float8_e5m2: (2, -14)}


@triton.jit
def _round_to_fp8_grid(x, MANTISSA_BITS: tl.constexpr, MIN_EXPONENT: tl.constexpr):
    """``x`` (float32, within the fp8 range) rounded half-to-even to the nearest fp8 value, still float32,
    so that the final cast is exact. Triton's interpreter drops the carry when its own cast rounds up
    into the next power of two (127.9 becomes 64); rounding here gives every backend torch's bytes."""
    exponent = tl.maximum(tl.floor(tl.log2(tl.abs(x))), MIN_EXPONENT)
    step = tl.exp2(exponent - MANTISSA_BITS)
    steps = x / step
    rounded = tl.floor(steps + 0.5)
    # A tie rounds to the even neighbour.
    rounded = tl.where((rounded - steps == 0.5) & (rounded % 2 != 0), rounded - 1.0, rounded)
    return rounded * step


@triton.jit
def _write_kv_cache_kernel(
    key_ptr,
    value_ptr,
    key_cache_ptr,
    value_cache_ptr,
    slot_mapping_ptr,
    k_scale_ptr,
    v_scale_ptr,
    num_kv_heads,
    stride_key_token,
    stride_key_head,
    stride_key_dim,
    stride_value_token,
    stride_value_head,
    stride_value_dim,
    stride_cache_block,
    stride_cache_slot,
    stride_cache_head,
    stride_cache_dim,
    HEAD_SIZE: tl.constexpr,
    HEADS_PAD: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    KV_BLOCK_SIZE: tl.constexpr,
    FP8_MAX: tl.constexpr,
    FP8_MANTISSA_BITS: tl.constexpr,
    FP8_MIN_EXPONENT: tl.constexpr,
):
    # One program per token copies all of its KV heads: [HEADS_PAD, HEAD_PAD] tiles.
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token)
    heads = tl.arange(0, HEADS_PAD)
    dims = tl.arange(0, HEAD_PAD)
    mask = (heads < num_kv_heads)[:, None] & (dims < HEAD_SIZE)[None, :]

    key_offsets = token * stride_key_token + heads[:, None] * stride_key_head + dims[None, :] * stride_key_dim
    value_offsets = token * stride_value_token + heads[:, None] * stride_value_head + dims[None, :] * stride_value_dim
    cache_offsets = (
        (slot // KV_BLOCK_SIZE) * stride_cache_block
        + (slot % KV_BLOCK_SIZE) * stride_cache_slot
        + heads[:, None] * stride_cache_head
        + dims[None, :] * stride_cache_dim
    )
    keys = tl.load(key_ptr + key_offsets, mask=mask)
    values = tl.load(value_ptr + value_offsets, mask=mask)
    if FP8_MAX > 0:
        # An fp8 cache keeps key / k_scale, saturated to the format's finite range.
        keys = tl.clamp(keys.to(tl.float32) / tl.load(k_scale_ptr), -FP8_MAX, FP8_MAX)
        values = tl.clamp(values.to(tl.float32) / tl.load(v_scale_ptr), -FP8_MAX, FP8_MAX)
        keys = _round_to_fp8_grid(keys, FP8_MANTISSA_BITS, FP8_MIN_EXPONENT)
        values = _round_to_fp8_grid(values, FP8_MANTISSA_BITS, FP8_MIN_EXPONENT)
    tl.store(key_cache_ptr + cache_offsets, keys.to(key_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(value_cache_ptr + cache_offsets, values.to(value_cache_ptr.dtype.element_ty), mask=mask)


def write_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    kv_scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Store ``key``/``value`` ``[num_tokens, num_kv_heads, head_size]`` into their slots of ``kv_cache``.

    Same contract as :func:`pagedllm_core.attention.reference.write_kv_cache`, including the cast
    to the cache's dtype; ``kv_scales`` (``(k_scale, v_scale)`` tensors) divide what an fp8 cache keeps.
    """
    num_tokens, num_kv_heads, head_size = key.shape
    if num_tokens == 0:
        return
    key_cache, value_cache = kv_cache[0], kv_cache[1]
    mantissa_bits, min_exponent = FP8_FORMATS.get(kv_cache.dtype, (0, 0))
    _write_kv_cache_kernel[(num_tokens,)](
        key,
        value,
        key_cache,
        value_cache,
        slot_mapping,
        *kv_scale_tensors(kv_scales, key.device),
        num_kv_heads,
        *key.stride(),
        *value.stride(),
        *key_cache.stride(),
        HEAD_SIZE=head_size,
        HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        HEAD_PAD=triton.next_power_of_2(head_size),
        KV_BLOCK_SIZE=key_cache.shape[1],
        FP8_MAX=fp8_max(kv_cache.dtype) if is_fp8(kv_cache.dtype) else 0.0,
        FP8_MANTISSA_BITS=mantissa_bits,
        FP8_MIN_EXPONENT=min_exponent,
    )

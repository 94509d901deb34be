"""Kernel that stores a step's new keys and values into their slots of the paged KV cache."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _write_kv_cache_kernel(
    key_ptr,
    value_ptr,
    key_cache_ptr,
    value_cache_ptr,
    slot_mapping_ptr,
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
    tl.store(key_cache_ptr + cache_offsets, keys.to(key_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(value_cache_ptr + cache_offsets, values.to(value_cache_ptr.dtype.element_ty), mask=mask)


def write_kv_cache(key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store ``key``/``value`` ``[num_tokens, num_kv_heads, head_size]`` into their slots of ``kv_cache``.

    Same contract as :func:`pagedllm_core.attention.reference.write_kv_cache`, including the cast
    to the cache's dtype.
    """
    num_tokens, num_kv_heads, head_size = key.shape
    if num_tokens == 0:
        return
    key_cache, value_cache = kv_cache[0], kv_cache[1]
    _write_kv_cache_kernel[(num_tokens,)](
        key,
        value,
        key_cache,
        value_cache,
        slot_mapping,
        num_kv_heads,
        *key.stride(),
        *value.stride(),
        *key_cache.stride(),
        HEAD_SIZE=head_size,
        HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        HEAD_PAD=triton.next_power_of_2(head_size),
        KV_BLOCK_SIZE=key_cache.shape[1],
    )

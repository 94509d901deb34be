"""Prefill attention: a batch of variable-length query runs, causal, over their paged contexts.

A sequence's new tokens are the last ``query_len`` positions of its context, so the same kernel
serves fresh prompts, chunked prefill and prefix reuse (earlier positions already cached), and
decode rows of a mixed batch (``query_len == 1``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedllm_attention_triton.attend import (
    LOG2_E,
    attend_paged_context,
    dot_dtype,
    dot_precision,
    kv_scale_tensors,
)
from pagedllm_core.attention.metadata import AttentionMetadata

# Context positions per key tile.
BLOCK_N = 64
# Query rows (tokens x query heads of one KV group) per program.
TARGET_ROWS = 64


@triton.jit
def _prefill_kernel(
    output_ptr,
    query_ptr,
    key_cache_ptr,
    value_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    k_scale_ptr,
    v_scale_ptr,
    scale_log2,
    stride_query_token,
    stride_query_head,
    stride_query_dim,
    stride_output_token,
    stride_output_head,
    stride_output_dim,
    stride_cache_block,
    stride_cache_slot,
    stride_cache_head,
    stride_cache_dim,
    stride_block_table,
    QUERY_GROUP_SIZE: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    KV_BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # One program per (sequence, KV head, tile of BLOCK_M new tokens). Row r of the tile is token
    # r // GROUP_PAD with query head r % GROUP_PAD of the KV head's group, so every key tile loaded
    # serves all query heads that share it.
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    first_token = tl.program_id(2) * BLOCK_M
    query_start = tl.load(query_start_loc_ptr + seq)
    query_len = tl.load(query_start_loc_ptr + seq + 1) - query_start
    if first_token >= query_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    num_cached = seq_len - query_len

    ROWS: tl.constexpr = BLOCK_M * GROUP_PAD
    rows = tl.arange(0, ROWS)
    tokens = first_token + rows // GROUP_PAD
    group_members = rows % GROUP_PAD
    heads = kv_head * QUERY_GROUP_SIZE + group_members
    row_mask = (tokens < query_len) & (group_members < QUERY_GROUP_SIZE)
    dims = tl.arange(0, HEAD_PAD)
    mask = row_mask[:, None] & (dims < HEAD_SIZE)[None, :]
    token_ids = (query_start + tokens).to(tl.int64)
    query_offsets = (
        token_ids[:, None] * stride_query_token + heads[:, None] * stride_query_head + dims[None, :] * stride_query_dim
    )
    query = tl.load(query_ptr + query_offsets, mask=mask, other=0.0).to(DOT_DTYPE)

    # Causality: no row of this tile sees past the tile's last token.
    context_end = tl.minimum(seq_len, num_cached + first_token + BLOCK_M)
    output, running_max, running_sum = attend_paged_context(
        query,
        num_cached + tokens,
        block_tables_ptr + seq * stride_block_table,
        key_cache_ptr + kv_head * stride_cache_head,
        value_cache_ptr + kv_head * stride_cache_head,
        stride_cache_block,
        stride_cache_slot,
        stride_cache_dim,
        0,
        context_end,
        scale_log2 * tl.load(k_scale_ptr),
        ROWS,
        HEAD_SIZE,
        HEAD_PAD,
        KV_BLOCK_SIZE,
        BLOCK_N,
        DOT_DTYPE,
        DOT_PRECISION,
    )
    # An fp8 cache's value scale multiplies the weighted sum of its values.
    output = output * (tl.load(v_scale_ptr) / running_sum[:, None])
    output_offsets = (
        token_ids[:, None] * stride_output_token
        + heads[:, None] * stride_output_head
        + dims[None, :] * stride_output_dim
    )
    tl.store(output_ptr + output_offsets, output.to(output_ptr.dtype.element_ty), mask=mask)


def paged_prefill(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    metadata: AttentionMetadata,
    scale: float,
    kv_scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens over its paged context (already in the cache).

    :param query: ``[num_tokens, num_heads, head_size]``
    :param kv_scales: ``(k_scale, v_scale)`` of an fp8 cache.
    :returns: ``[num_tokens, num_heads, head_size]`` in the query's dtype.
    """
    num_heads, head_size = query.shape[1:]
    key_cache, value_cache = kv_cache[0], kv_cache[1]
    num_kv_heads = key_cache.shape[2]
    query_group_size = num_heads // num_kv_heads
    group_pad = triton.next_power_of_2(query_group_size)
    block_m = max(TARGET_ROWS // group_pad, 1)
    compute_dtype = dot_dtype(query.dtype, kv_cache.dtype)
    output = torch.empty_like(query)
    grid = (metadata.num_seqs, num_kv_heads, triton.cdiv(metadata.max_query_len, block_m))
    _prefill_kernel[grid](
        output,
        query,
        key_cache,
        value_cache,
        metadata.block_tables,
        metadata.seq_lens,
        metadata.query_start_loc,
        *kv_scale_tensors(kv_scales, query.device),
        scale * LOG2_E,
        *query.stride(),
        *output.stride(),
        *key_cache.stride(),
        metadata.block_tables.stride(0),
        QUERY_GROUP_SIZE=query_group_size,
        GROUP_PAD=group_pad,
        BLOCK_M=block_m,
        HEAD_SIZE=head_size,
        HEAD_PAD=triton.next_power_of_2(head_size),
        KV_BLOCK_SIZE=key_cache.shape[1],
        BLOCK_N=BLOCK_N,
        DOT_DTYPE=compute_dtype,
        DOT_PRECISION=dot_precision(compute_dtype),
    )
    return output

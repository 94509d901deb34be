"""Decode attention: one new token per sequence against its paged context, optionally split-K.

With few sequences and long contexts, one program per (sequence, KV head) leaves most of the GPU
idle. Split-K (flash-decoding) cuts each context into partitions attended by separate programs,
which write partial outputs with their softmax statistics; a reduction kernel then merges them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagedllm_attention_triton.attend import (
    LOG2_E,
    MIN_DOT_SIZE,
    attend_paged_context,
    dot_dtype,
    dot_precision,
    kv_scale_tensors,
)
from pagedllm_core.attention.metadata import AttentionMetadata

# Context positions per key tile.
BLOCK_N = 64
# A partition shorter than this does not repay the extra reduction pass.
MIN_PARTITION_SIZE = 256


@dataclass(frozen=True)
class DecodeSplit:
    """How a decode step's contexts are cut: ``num_splits`` partitions of ``partition_size`` positions."""

    num_splits: int
    partition_size: int


def plan_decode_split(num_seqs: int, num_kv_heads: int, max_seq_len: int, num_target_programs: int) -> DecodeSplit:
    """Split contexts only as far as needed to give the device ``num_target_programs`` programs."""
    num_programs = num_seqs * num_kv_heads
    num_splits = min(triton.cdiv(num_target_programs, num_programs), max_seq_len // MIN_PARTITION_SIZE)
    if num_splits <= 1:
        return DecodeSplit(1, max_seq_len)
    partition_size = triton.cdiv(triton.cdiv(max_seq_len, num_splits), BLOCK_N) * BLOCK_N
    return DecodeSplit(triton.cdiv(max_seq_len, partition_size), partition_size)


@triton.jit
def _decode_kernel(
    output_ptr,
    partial_output_ptr,
    partial_max_ptr,
    partial_sum_ptr,
    query_ptr,
    key_cache_ptr,
    value_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    k_scale_ptr,
    v_scale_ptr,
    scale_log2,
    num_heads,
    num_splits,
    partition_size,
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
    ROWS: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    KV_BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    WRITE_PARTIALS: tl.constexpr,
):
    # One program per (sequence, KV head, partition); its rows are the query heads sharing that
    # KV head, so each key tile is read once for the whole group. Sequence i's token is token i.
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    context_start = split * partition_size
    if context_start >= seq_len:
        return
    context_end = tl.minimum(context_start + partition_size, seq_len)

    rows = tl.arange(0, ROWS)
    heads = kv_head * QUERY_GROUP_SIZE + rows
    row_mask = rows < QUERY_GROUP_SIZE
    dims = tl.arange(0, HEAD_PAD)
    dim_mask = dims < HEAD_SIZE
    mask = row_mask[:, None] & dim_mask[None, :]
    query_offsets = seq * stride_query_token + heads[:, None] * stride_query_head + dims[None, :] * stride_query_dim
    query = tl.load(query_ptr + query_offsets, mask=mask, other=0.0).to(DOT_DTYPE)

    output, running_max, running_sum = attend_paged_context(
        query,
        tl.zeros([ROWS], tl.int32) + seq_len - 1,
        block_tables_ptr + seq * stride_block_table,
        key_cache_ptr + kv_head * stride_cache_head,
        value_cache_ptr + kv_head * stride_cache_head,
        stride_cache_block,
        stride_cache_slot,
        stride_cache_dim,
        context_start,
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

    if WRITE_PARTIALS:
        # partials: [num_seqs, num_heads, num_splits] (and [..., HEAD_SIZE] for outputs), contiguous
        partial_index = (seq * num_heads + heads) * num_splits + split
        tl.store(partial_max_ptr + partial_index, running_max, mask=row_mask)
        tl.store(partial_sum_ptr + partial_index, running_sum, mask=row_mask)
        tl.store(partial_output_ptr + partial_index[:, None] * HEAD_SIZE + dims[None, :], output, mask=mask)
    else:
        output_offsets = (
            seq * stride_output_token + heads[:, None] * stride_output_head + dims[None, :] * stride_output_dim
        )
        tl.store(output_ptr + output_offsets, output.to(output_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _reduce_splits_kernel(
    output_ptr,
    partial_output_ptr,
    partial_max_ptr,
    partial_sum_ptr,
    seq_lens_ptr,
    num_heads,
    num_splits,
    partition_size,
    stride_output_token,
    stride_output_head,
    stride_output_dim,
    HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
):
    # One program per (sequence, query head) merges the partitions that sequence actually used,
    # weighting each partial output by its share of the overall sum of exponentials.
    seq = tl.program_id(0)
    head = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    splits = tl.arange(0, SPLITS_PAD)
    used = splits < tl.cdiv(seq_len, partition_size)
    dims = tl.arange(0, HEAD_PAD)
    dim_mask = dims < HEAD_SIZE

    partial_index = (seq * num_heads + head) * num_splits + splits
    maxes = tl.load(partial_max_ptr + partial_index, mask=used, other=float("-inf"))
    sums = tl.load(partial_sum_ptr + partial_index, mask=used, other=0.0)
    weights = sums * tl.exp2(maxes - tl.max(maxes, axis=0))
    partial_outputs = tl.load(
        partial_output_ptr + partial_index[:, None] * HEAD_SIZE + dims[None, :],
        mask=used[:, None] & dim_mask[None, :],
        other=0.0,
    )
    output = tl.sum(weights[:, None] * partial_outputs, axis=0) / tl.sum(weights, axis=0)
    output_offsets = seq * stride_output_token + head * stride_output_head + dims * stride_output_dim
    tl.store(output_ptr + output_offsets, output.to(output_ptr.dtype.element_ty), mask=dim_mask)


def paged_decode(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    metadata: AttentionMetadata,
    scale: float,
    split: DecodeSplit,
    kv_scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Attention of each sequence's single new token over its paged context (already in the cache).

    :param query: ``[num_seqs, num_heads, head_size]``; the step must be decode-only.
    :param split: how to partition the contexts; one partition skips the reduction.
    :param kv_scales: ``(k_scale, v_scale)`` of an fp8 cache.
    :returns: ``[num_seqs, num_heads, head_size]`` in the query's dtype.
    """
    num_seqs, num_heads, head_size = query.shape
    key_cache, value_cache = kv_cache[0], kv_cache[1]
    num_kv_heads = key_cache.shape[2]
    query_group_size = num_heads // num_kv_heads
    head_pad = triton.next_power_of_2(head_size)
    compute_dtype = dot_dtype(query.dtype, kv_cache.dtype)
    output = torch.empty_like(query)
    write_partials = split.num_splits > 1
    if write_partials:
        partial_output = query.new_empty(num_seqs, num_heads, split.num_splits, head_size, dtype=torch.float32)
        partial_max = query.new_empty(num_seqs, num_heads, split.num_splits, dtype=torch.float32)
        partial_sum = torch.empty_like(partial_max)
    else:
        partial_output = partial_max = partial_sum = None

    _decode_kernel[(num_seqs, num_kv_heads, split.num_splits)](
        output,
        partial_output,
        partial_max,
        partial_sum,
        query,
        key_cache,
        value_cache,
        metadata.block_tables,
        metadata.seq_lens,
        *kv_scale_tensors(kv_scales, query.device),
        scale * LOG2_E,
        num_heads,
        split.num_splits,
        split.partition_size,
        *query.stride(),
        *output.stride(),
        *key_cache.stride(),
        metadata.block_tables.stride(0),
        QUERY_GROUP_SIZE=query_group_size,
        ROWS=max(triton.next_power_of_2(query_group_size), MIN_DOT_SIZE),
        HEAD_SIZE=head_size,
        HEAD_PAD=head_pad,
        KV_BLOCK_SIZE=key_cache.shape[1],
        BLOCK_N=BLOCK_N,
        DOT_DTYPE=compute_dtype,
        DOT_PRECISION=dot_precision(compute_dtype),
        WRITE_PARTIALS=write_partials,
    )
    if write_partials:
        _reduce_splits_kernel[(num_seqs, num_heads)](
            output,
            partial_output,
            partial_max,
            partial_sum,
            metadata.seq_lens,
            num_heads,
            split.num_splits,
            split.partition_size,
            *output.stride(),
            HEAD_SIZE=head_size,
            HEAD_PAD=head_pad,
            SPLITS_PAD=triton.next_power_of_2(split.num_splits),
        )
    return output

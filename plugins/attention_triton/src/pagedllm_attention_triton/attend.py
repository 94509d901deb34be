"""The loop every attention kernel shares: online softmax of a tile of query rows over paged keys."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from pagedllm_attention_triton.interpreter import interpreter_enabled

# Scores are kept in base 2 so the softmax can use exp2; the scale absorbs the change of base.
LOG2_E = 1.4426950408889634

# tl.dot needs every dimension to be at least this large.
MIN_DOT_SIZE = 16

_TRITON_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def dot_dtype(query_dtype: torch.dtype, cache_dtype: torch.dtype) -> tl.dtype:
    """The dtype both operands of the kernels' matrix products are cast to.

    Tensor cores take the cache's half-precision dtype as is. A float32 query or cache keeps the
    products in float32, like the reference. The interpreter stores bfloat16 as raw 16-bit integers
    and gets its arithmetic wrong, so there bfloat16 is widened to float32 first.
    """
    if query_dtype != cache_dtype or cache_dtype == torch.float32:
        return tl.float32
    if cache_dtype == torch.bfloat16 and interpreter_enabled():
        return tl.float32
    return _TRITON_DTYPES[cache_dtype]


def kv_scale_tensors(
    kv_scales: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(k_scale, v_scale)`` the kernels read: an fp8 cache's, else ones (a cache in the model's dtype)."""
    return kv_scales if kv_scales is not None else _unit_scales(device)


@functools.cache
def _unit_scales(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ones = torch.ones(2, dtype=torch.float32, device=device)
    return ones[0], ones[1]


def dot_precision(dtype: tl.dtype) -> str:
    """Full float32 products for float32 operands (TF32 would miss the float32 tolerance)."""
    return "ieee" if dtype == tl.float32 else "tf32"


@triton.jit
def attend_paged_context(
    query,  # [ROWS, HEAD_PAD] in DOT_DTYPE, zero in padded rows and dims
    query_positions,  # [ROWS] context position of each row's token: it sees keys up to and including it
    block_table_ptr,  # this sequence's row of the block table
    key_cache_ptr,  # key cache, already offset to this KV head
    value_cache_ptr,  # value cache, already offset to this KV head
    stride_cache_block,
    stride_cache_slot,
    stride_cache_dim,
    context_start,
    context_end,
    scale_log2,  # softmax scale times log2(e)
    ROWS: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    KV_BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Attend ``query`` to context positions ``[context_start, context_end)`` of one sequence.

    Returns the unnormalised output ``[ROWS, HEAD_PAD]`` with each row's running max (base 2) and
    sum of exponentials; the caller divides, or hands all three to a split-K reduction. Keys are
    read in tiles of ``BLOCK_N`` positions whose slots come from the block table.
    """
    dims = tl.arange(0, HEAD_PAD)
    dim_mask = dims < HEAD_SIZE
    running_max = tl.full([ROWS], float("-inf"), tl.float32)
    running_sum = tl.zeros([ROWS], tl.float32)
    output = tl.zeros([ROWS, HEAD_PAD], tl.float32)
    for tile_start in range(context_start, context_end, BLOCK_N):
        positions = tile_start + tl.arange(0, BLOCK_N)
        in_range = positions < context_end
        block_ids = tl.load(block_table_ptr + positions // KV_BLOCK_SIZE, mask=in_range, other=0).to(tl.int64)
        slots = block_ids * stride_cache_block + (positions % KV_BLOCK_SIZE) * stride_cache_slot
        cache_offsets = slots[:, None] + dims[None, :] * stride_cache_dim
        cache_mask = in_range[:, None] & dim_mask[None, :]

        keys = tl.load(key_cache_ptr + cache_offsets, mask=cache_mask, other=0.0).to(DOT_DTYPE)
        scores = tl.dot(query, tl.trans(keys), input_precision=DOT_PRECISION) * scale_log2
        visible = in_range[None, :] & (positions[None, :] <= query_positions[:, None])
        scores = tl.where(visible, scores, float("-inf"))

        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        # A row that has seen no visible key yet still has max -inf; shifting by 0 avoids inf - inf.
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        probabilities = tl.exp2(scores - shift[:, None])
        rescale = tl.exp2(running_max - shift)
        running_sum = running_sum * rescale + tl.sum(probabilities, axis=1)

        values = tl.load(value_cache_ptr + cache_offsets, mask=cache_mask, other=0.0).to(DOT_DTYPE)
        output = output * rescale[:, None]
        output += tl.dot(probabilities.to(DOT_DTYPE), values, input_precision=DOT_PRECISION)
        running_max = new_max
    return output, running_max, running_sum

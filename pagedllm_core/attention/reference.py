"""Plain-PyTorch paged attention: the default backend's implementation and every kernel's test oracle."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pagedllm_core.attention.kv_quant import dequantize_kv, is_fp8, quantize_kv
from pagedllm_core.attention.metadata import AttentionMetadata

# (k_scale, v_scale): one layer's float32 scalar scales of an FP8 KV cache (see kv_quant).
KVScales = tuple[torch.Tensor, torch.Tensor]


def write_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    kv_scales: KVScales | None = None,
) -> None:
    """Store ``key``/``value`` ``[num_tokens, num_kv_heads, head_size]`` into their slots of ``kv_cache``;
    an fp8 cache stores them divided by ``kv_scales``."""
    num_kv_heads, head_size = kv_cache.shape[-2:]
    for index, tensor in enumerate((key, value)):
        layer_cache = kv_cache[index].view(-1, num_kv_heads, head_size)
        if is_fp8(kv_cache.dtype):
            # index_copy_ has no fp8 kernel on the CPU; the bytes are copied as they are.
            stored = quantize_kv(tensor, kv_scales[index], kv_cache.dtype)
            layer_cache.view(torch.uint8).index_copy_(0, slot_mapping, stored.view(torch.uint8))
        else:
            layer_cache.index_copy_(0, slot_mapping, tensor.to(kv_cache.dtype))


def read_kv_cache(cache: torch.Tensor, dtype: torch.dtype, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Cache contents (keys or values) in ``dtype``, fp8 ones multiplied by their ``scale``."""
    if is_fp8(cache.dtype):
        return dequantize_kv(cache, scale, dtype)
    return cache.to(dtype)


@dataclass
class PaddedLayout:
    """Index tensors that scatter a flattened step into a ``[num_seqs, max_query_len]`` grid and back."""

    token_seq: torch.Tensor  # [num_tokens] which sequence each token belongs to
    token_row: torch.Tensor  # [num_tokens] its index among that sequence's new tokens
    context_slots: torch.Tensor  # [num_seqs, max_seq_len] cache slot of every context position
    mask: torch.Tensor  # [num_seqs, 1, max_query_len, max_seq_len] True where attention is allowed


def build_padded_layout(metadata: AttentionMetadata, block_size: int) -> PaddedLayout:
    """Derive the gather/scatter indices and the causal mask for a step, with tensor ops only."""
    device = metadata.seq_lens.device
    query_start = metadata.query_start_loc.long()
    query_lens = query_start[1:] - query_start[:-1]
    seq_lens = metadata.seq_lens.long()
    num_seqs = seq_lens.shape[0]

    token_seq = torch.repeat_interleave(torch.arange(num_seqs, device=device), query_lens)
    token_row = torch.arange(token_seq.shape[0], device=device) - query_start[token_seq]

    positions = torch.arange(metadata.max_seq_len, device=device)
    block_ids = metadata.block_tables.long()[:, positions // block_size]
    context_slots = block_ids * block_size + positions % block_size

    # Query row r of sequence i sits at position seq_len - query_len + r and sees keys up to it.
    rows = torch.arange(metadata.max_query_len, device=device)
    query_positions = (seq_lens - query_lens)[:, None] + rows[None, :]
    mask = positions[None, None, :] <= query_positions[:, :, None]
    # Padding rows (r >= query_len) would see nothing and produce NaN; let them see position 0.
    mask |= (rows[None, :, None] >= query_lens[:, None, None]) & (positions[None, None, :] == 0)
    return PaddedLayout(token_seq, token_row, context_slots, mask.unsqueeze(1))


def paged_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    metadata: AttentionMetadata,
    scale: float,
    layout: PaddedLayout | None = None,
    kv_scales: KVScales | None = None,
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens over its paged context (already in the cache).

    :param query: ``[num_tokens, num_heads, head_size]``
    :param kv_scales: the layer's scales when the cache is fp8
    :returns: ``[num_tokens, num_heads, head_size]``
    """
    block_size, num_kv_heads, head_size = kv_cache.shape[-3:]
    if layout is None:
        layout = build_padded_layout(metadata, block_size)
    num_seqs = metadata.num_seqs
    num_heads = query.shape[1]

    # keys/values: [num_seqs, num_kv_heads, max_seq_len, head_size]
    key_scale, value_scale = kv_scales if kv_scales is not None else (None, None)
    keys = kv_cache[0].view(-1, num_kv_heads, head_size)[layout.context_slots].transpose(1, 2)
    values = kv_cache[1].view(-1, num_kv_heads, head_size)[layout.context_slots].transpose(1, 2)
    padded_query = query.new_zeros(num_seqs, metadata.max_query_len, num_heads, head_size)
    padded_query[layout.token_seq, layout.token_row] = query
    output = F.scaled_dot_product_attention(
        padded_query.transpose(1, 2),
        read_kv_cache(keys, query.dtype, key_scale),
        read_kv_cache(values, query.dtype, value_scale),
        attn_mask=layout.mask,
        scale=scale,
        enable_gqa=num_heads != num_kv_heads,
    )
    # output: [num_seqs, num_heads, max_query_len, head_size] -> [num_tokens, num_heads, head_size]
    return output.transpose(1, 2)[layout.token_seq, layout.token_row]

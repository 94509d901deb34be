"""Attention over whole prompts in one pass, with no KV cache: what an embedding forward needs.

Every sequence of the step is complete, so each attends only to its own tokens: causally for a
decoder pooled into embeddings, in both directions for an encoder such as BERT. The models call it
through the same :class:`~pagedllm_core.attention.backend.AttentionBackend` contract as paged
attention, so one model implementation serves generation and embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pagedllm_core.attention.backend import AttentionBackend, AttentionSpec
from pagedllm_core.attention.metadata import AttentionMetadata


@dataclass
class _PaddedBatch:
    """Where each token sits in a ``[num_seqs, max_len]`` grid, and which grid cells may attend to which."""

    token_seq: torch.Tensor  # [num_tokens]
    token_row: torch.Tensor  # [num_tokens]
    # [num_seqs, 1, max_len, max_len] True where attention is allowed; None when no sequence is padded
    # (SDPA then takes its fused path, which never materializes the mask)
    mask: torch.Tensor | None


class PromptAttention(AttentionBackend):
    """Attention within each sequence of a step of whole prompts; ``kv_cache`` is ignored (pass None)."""

    def __init__(self, spec: AttentionSpec, causal: bool):
        super().__init__(spec)
        self.causal = causal

    def prepare(self, metadata: AttentionMetadata) -> None:
        starts = metadata.query_start_loc.long()
        lengths = starts[1:] - starts[:-1]
        device = lengths.device
        token_seq = torch.repeat_interleave(torch.arange(lengths.shape[0], device=device), lengths)
        token_row = torch.arange(token_seq.shape[0], device=device) - starts[token_seq]
        if metadata.num_tokens == metadata.num_seqs * metadata.max_query_len:
            metadata.backend_data = _PaddedBatch(token_seq, token_row, None)
            return
        positions = torch.arange(metadata.max_query_len, device=device)
        # keys beyond a sequence's length are padding; padding query rows still see key 0 (no NaN rows)
        mask = (positions[None, None, :] < lengths[:, None, None]).expand(-1, metadata.max_query_len, -1)
        if self.causal:
            mask = mask & (positions[None, None, :] <= positions[None, :, None])
        metadata.backend_data = _PaddedBatch(token_seq, token_row, mask.unsqueeze(1))

    def forward(self, query, key, value, kv_cache, metadata: AttentionMetadata) -> torch.Tensor:
        # query: [num_tokens, num_heads, head_size]; key, value: [num_tokens, num_kv_heads, head_size]
        batch: _PaddedBatch = metadata.backend_data
        num_seqs, max_len = metadata.num_seqs, metadata.max_query_len

        def padded(tokens: torch.Tensor) -> torch.Tensor:
            # [num_tokens, heads, head_size] -> [num_seqs, heads, max_len, head_size]
            grid = tokens.new_zeros(num_seqs, max_len, *tokens.shape[1:])
            grid[batch.token_seq, batch.token_row] = tokens
            return grid.transpose(1, 2)

        output = F.scaled_dot_product_attention(
            padded(query),
            padded(key),
            padded(value),
            attn_mask=batch.mask,
            is_causal=self.causal and batch.mask is None,
            scale=self.spec.scale,
            enable_gqa=query.shape[1] != key.shape[1],
        )
        # output: [num_seqs, num_heads, max_len, head_size] -> [num_tokens, num_heads, head_size]
        return output.transpose(1, 2)[batch.token_seq, batch.token_row]

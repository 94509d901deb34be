"""What an attention backend learns about a step: where new tokens go and what each sequence sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class AttentionMetadata:
    """The flattened batch of one step, built once by the model runner and shared by every layer.

    The step's tokens are laid out sequence after sequence. Sequence ``i`` contributes
    ``query_start_loc[i+1] - query_start_loc[i]`` new tokens, which are the *last* tokens of its
    ``seq_lens[i]`` tokens of context: earlier ones are already in the KV cache. Attention is causal
    within the sequence.
    """

    # slot_mapping: [num_tokens] int64, block_id * block_size + offset where each new token's K/V goes
    slot_mapping: torch.Tensor
    # query_start_loc: [num_seqs + 1] int32, cumulative number of new tokens per sequence
    query_start_loc: torch.Tensor
    # seq_lens: [num_seqs] int32, context length of each sequence including this step's tokens
    seq_lens: torch.Tensor
    # block_tables: [num_seqs, max_blocks_per_seq] int32, KV block ids of each sequence (padded)
    block_tables: torch.Tensor
    max_query_len: int
    max_seq_len: int
    # Whatever the backend derived once per step in ``AttentionBackend.prepare`` for all layers.
    backend_data: Any = None

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.slot_mapping.shape[0]

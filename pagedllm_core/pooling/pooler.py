"""Pooling a flattened batch of hidden states into one embedding per sequence."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class PoolingType(str, enum.Enum):
    """Which hidden states make a sequence's embedding (vLLM's names)."""

    LAST = "LAST"  # the last token's: what a causal decoder has seen the whole input by
    MEAN = "MEAN"  # the average over every token
    CLS = "CLS"  # the first token's: BERT's [CLS]


@dataclass(frozen=True)
class Pooler:
    """Pools each sequence of a flattened batch; ``normalize`` is the model's default for its embeddings."""

    pooling_type: PoolingType
    normalize: bool

    def __call__(self, hidden_states: torch.Tensor, query_start_loc: torch.Tensor) -> torch.Tensor:
        """``hidden_states``: ``[num_tokens, hidden_size]``, sequences back to back as ``query_start_loc``
        ``[num_seqs + 1]`` delimits them -> float32 ``[num_seqs, hidden_size]``, not normalized (see :func:`finish_embedding`)."""
        starts, ends = query_start_loc[:-1].long(), query_start_loc[1:].long()
        if self.pooling_type is PoolingType.CLS:
            pooled = hidden_states[starts]
        elif self.pooling_type is PoolingType.LAST:
            pooled = hidden_states[ends - 1]
        else:
            lengths = ends - starts
            token_seq = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
            sums = hidden_states.new_zeros(lengths.shape[0], hidden_states.shape[1], dtype=torch.float32)
            pooled = sums.index_add_(0, token_seq, hidden_states.float()) / lengths[:, None]
        return pooled.float()


def finish_embedding(embedding: torch.Tensor, dimensions: int | None, normalize: bool) -> list[float]:
    """One pooled (not yet normalized) embedding cut to its first ``dimensions`` (Matryoshka), then
    normalized: truncating a unit vector leaves it shorter than one."""
    if dimensions is not None:
        embedding = embedding[:dimensions]
    if normalize:
        embedding = F.normalize(embedding, dim=-1)
    return embedding.tolist()

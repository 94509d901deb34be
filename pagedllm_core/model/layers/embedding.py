"""A token embedding split over tensor-parallel ranks by vocabulary rows."""

from __future__ import annotations

import torch
from torch import nn

from pagedllm_core.distributed.group import TensorParallelGroup
from pagedllm_core.distributed.partition import Shard


class VocabParallelEmbedding(nn.Module):
    """Rows ``shard`` of the embedding table; each rank looks up the tokens it holds, zeros the rest,
    and the sum over the ranks is every token's embedding."""

    def __init__(self, tp: TensorParallelGroup, shard: Shard, embedding_dim: int):
        super().__init__()
        self.tp = tp
        self.shard = shard
        self.weight = nn.Parameter(torch.empty(shard.size, embedding_dim))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [num_tokens] -> [num_tokens, embedding_dim]
        local_ids = input_ids - self.shard.start
        elsewhere = (local_ids < 0) | (local_ids >= self.shard.size)
        embeddings = nn.functional.embedding(local_ids.masked_fill(elsewhere, 0), self.weight)
        return self.tp.all_reduce(embeddings.masked_fill_(elsewhere.unsqueeze(-1), 0))

"""A linear layer that computes several projections of one input in a single matmul."""

from __future__ import annotations

import torch
from torch import nn


class MergedLinear(nn.Linear):
    """Projections of the same input (q/k/v, gate/up) stacked along the output dimension.

    Checkpoints store each projection separately; :meth:`load_shard` copies one of them into its
    rows, and :meth:`split` cuts the fused output back into the separate projections.
    """

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool):
        super().__init__(input_size, sum(output_sizes), bias=bias)
        self.output_sizes = list(output_sizes)

    def load_shard(self, parameter_name: str, shard_index: int, tensor: torch.Tensor) -> None:
        """Copy a checkpoint's ``weight`` or ``bias`` of projection ``shard_index`` into its rows."""
        start = sum(self.output_sizes[:shard_index])
        rows = getattr(self, parameter_name).data.narrow(0, start, self.output_sizes[shard_index])
        if rows.shape != tensor.shape:
            raise ValueError(
                f"shard {shard_index} {parameter_name} expects {tuple(rows.shape)}, got {tuple(tensor.shape)}"
            )
        rows.copy_(tensor)

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # output: [num_tokens, sum(output_sizes)] -> one [num_tokens, size] view per projection
        return output.split(self.output_sizes, dim=-1)

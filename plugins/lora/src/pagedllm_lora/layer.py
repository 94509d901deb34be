"""A linear layer (dense, prepacked or quantized) plus the batched LoRA deltas of the adapters in its slots."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pagedllm_lora.adapter import LoRAWeights
from pagedllm_lora.step_state import LoRAStepState

# (output, x, lora_a, lora_b, output_sizes, state) -> output with every token's delta added in place
LoRAOp = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int], LoRAStepState], torch.Tensor]


class LoRALinear(nn.Module):
    """``base(x)`` plus, for each token, the delta of the adapter in its slot.

    A merged base layer (q/k/v, gate/up) gets one piece per projection: each slot's ``lora_a`` stacks
    the projections' A matrices along the rank (``num_projections * max_lora_rank`` rows, each padded
    with zeros to ``max_lora_rank``), and ``lora_b`` (``max_lora_rank`` rows) holds each projection's B
    over its own output columns, side by side, so the fused output gets every projection's delta in its
    place (layout in :mod:`pagedllm_lora.punica`).
    """

    def __init__(self, base: nn.Module, projection_names: list[str], num_slots: int, max_lora_rank: int,
                 state: LoRAStepState, op: LoRAOp, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.base = base
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.output_sizes = list(getattr(base, "output_sizes", [base.out_features]))
        self.projection_names = projection_names
        self.max_lora_rank = max_lora_rank
        width = len(self.output_sizes) * max_lora_rank
        self.register_buffer("lora_a", torch.zeros(num_slots, width, self.in_features, device=device, dtype=dtype))
        self.register_buffer("lora_b", torch.zeros(num_slots, max_lora_rank, self.out_features, device=device,
                                                   dtype=dtype))
        self.state = state
        self.op = op
        self.filled_slots: set[int] = set()  # slots whose adapter targets this layer

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return output.split(self.output_sizes, dim=-1)

    def set_slot(self, slot: int, weights: dict[str, LoRAWeights]) -> None:
        """Write an adapter's pieces for this layer into ``slot`` (keyed by projection name; absent ones are zero)."""
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        offset = 0
        for index, (name, size) in enumerate(zip(self.projection_names, self.output_sizes)):
            piece = weights.get(name)
            if piece is not None:
                rank, first = piece.lora_a.shape[0], index * self.max_lora_rank
                self.lora_a[slot, first : first + rank] = piece.lora_a.to(self.lora_a)
                self.lora_b[slot, :rank, offset : offset + size] = piece.lora_b.T.to(self.lora_b)
            offset += size
        if weights:
            self.filled_slots.add(slot)
        else:
            self.filled_slots.discard(slot)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [num_tokens, in_features] -> [num_tokens, out_features]
        output = self.base(hidden_states)
        if self.filled_slots.isdisjoint(self.state.active_slots):
            return output
        return self.op(output, hidden_states, self.lora_a, self.lora_b, self.output_sizes, self.state)

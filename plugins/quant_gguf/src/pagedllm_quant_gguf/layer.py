"""A linear layer that keeps its checkpoint's GGUF blocks beside its dense weight."""

from __future__ import annotations

from types import ModuleType

import torch
from torch import nn

from pagedllm_core.model.layers.linear import SplitsOutput

# Steps with at most this many rows read the blocks; bigger ones are compute-bound and the dense
# float32 matmul is faster (decode steps of the default model, docs/quantization.md).
MAX_BLOCK_ROWS = 16


class GGUFLinear(SplitsOutput, nn.Module):
    """``x @ W.T + b`` from the quantized blocks for small steps, from the dense layer otherwise.

    A decode step of up to a dozen or so sequences is bound by reading weights from memory: the blocks
    hold 4.5-8.5 bits per weight against float32's 32. Both paths compute with the same weight
    values (the blocks dequantize bit for bit to the dense weight) and differ only in summation order.
    """

    def __init__(self, dense: nn.Module, blocks: torch.Tensor, quant_type: int, kernels: ModuleType):
        super().__init__()
        self.dense = dense
        self.in_features = dense.in_features
        self.out_features = dense.out_features
        self.output_sizes = list(getattr(dense, "output_sizes", [dense.out_features]))
        self.register_buffer("blocks", blocks)
        self.quant_type = quant_type
        self._kernels = kernels

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [..., in_features] -> [..., out_features]
        rows = hidden_states.reshape(-1, self.in_features)
        if rows.shape[0] > MAX_BLOCK_ROWS:
            return self.dense(hidden_states)
        output = self._kernels.gguf_linear(rows.contiguous(), self.blocks, self.quant_type, self.dense.bias)
        return output.view(*hidden_states.shape[:-1], self.out_features)

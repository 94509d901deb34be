"""Root-mean-square layer normalisation (Llama, Mistral, Qwen2)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Scales each row to unit root-mean-square, then by a learned per-channel weight.

    The statistics are taken in float32 and the weight is applied after casting back, as
    transformers does, so that bfloat16 and float16 outputs match it bit for bit.
    """

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [num_tokens, hidden_size]
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.eps)
        return self.weight * hidden_states.to(input_dtype)

"""Root-mean-square layer normalisation (Llama, Mistral, Qwen2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagedllm_core.model.layers import cpu_rms_norm


class RMSNorm(nn.Module):
    """Scales each row to unit root-mean-square, then by a learned per-channel weight.

    The statistics are taken in float32 and the weight is applied after casting back, as
    transformers does, so that bfloat16 and float16 outputs match it bit for bit. float32 rows on a
    CPU, outside autograd, go through one C++ call (:mod:`~pagedllm_core.model.layers.cpu_rms_norm`).
    """

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        if self.weight.dtype == torch.float32 and self.weight.device.type == "cpu":
            cpu_rms_norm.load_kernel()  # built (once per machine) while the model loads, not in its first step

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [num_tokens, hidden_size]
        if hidden_states.dtype == torch.float32:
            if hidden_states.device.type == "cpu" and not torch.is_grad_enabled():
                kernel = cpu_rms_norm.load_kernel()
                if kernel is not None:
                    return kernel.rms_norm(hidden_states, self.weight, self.eps)
            return F.rms_norm(hidden_states, self.weight.shape, self.weight, self.eps)
        normalized = F.rms_norm(hidden_states.float(), self.weight.shape, eps=self.eps)
        return self.weight * normalized.to(hidden_states.dtype)

"""Root-mean-square layer normalisation (Llama, Mistral, Qwen2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagedllm_core.model.layers import cpu_kernels


class RMSNorm(nn.Module):
    """Scales each row to unit root-mean-square, then by a learned per-channel weight.

    The statistics are taken in float32 and the weight is applied after casting back, as
    transformers does, so that bfloat16 and float16 outputs match it bit for bit. Given a
    ``residual``, the norm first adds its input to it (``residual = residual + x``) and returns
    ``(norm(residual), residual)``: a pre-norm block's residual add folded into the next norm, as
    vLLM's ``fused_add_rms_norm``. float32, bfloat16 or float16 rows on a CPU, outside autograd, go through
    one C++ call (:mod:`~pagedllm_core.model.layers.cpu_kernels`), which updates ``residual`` in place.
    """

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        if self.weight.device.type == "cpu":
            cpu_kernels.load_kernels()  # built (once per machine) while the model loads, not in its first step

    def forward(
        self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # hidden_states, residual: [num_tokens, hidden_size]
        kernels = cpu_kernels.kernels_for(hidden_states)
        if residual is None:
            if kernels is not None:
                return kernels.rms_norm(hidden_states, self.weight, self.eps)
            return self._norm(hidden_states)
        if kernels is not None and residual.is_contiguous():
            return kernels.fused_add_rms_norm(hidden_states, residual, self.weight, self.eps), residual
        residual = residual + hidden_states
        return self._norm(residual), residual

    def _norm(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dtype == torch.float32:
            return F.rms_norm(hidden_states, self.weight.shape, self.weight, self.eps)
        normalized = F.rms_norm(hidden_states.float(), self.weight.shape, eps=self.eps)
        return self.weight * normalized.to(hidden_states.dtype)

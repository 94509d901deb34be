"""Activation functions by the names Hugging Face configs use."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.layers import cpu_kernels

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
}


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function a config's ``hidden_act``/``activation_function`` names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ModelLoadError(
            f"activation function {name!r} is not supported (supported: {', '.join(sorted(ACTIVATIONS))})"
        ) from None


class ActAndMul(nn.Module):
    """The gated MLP's ``act(gate) * up``, read from the fused gate/up projection's output."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.act = act

    def forward(self, gate_up: torch.Tensor) -> torch.Tensor:
        # gate_up: [num_tokens, 2 * intermediate_size] -> [num_tokens, intermediate_size]
        gate, up = gate_up.chunk(2, dim=-1)
        return self.act(gate) * up


class SiluAndMul(ActAndMul):
    """``silu(gate) * up`` (vLLM's name); float32, bfloat16 or float16 rows on a CPU, outside autograd, go
    through one C++ call (:mod:`~pagedllm_core.model.layers.cpu_kernels`) with the same results as torch's ops."""

    def __init__(self):
        super().__init__(F.silu)
        if torch.get_default_device().type == "cpu":
            cpu_kernels.load_kernels()  # built (once per machine) while the model loads, not in its first step

    def forward(self, gate_up: torch.Tensor) -> torch.Tensor:
        kernels = cpu_kernels.kernels_for(gate_up)
        if kernels is not None:
            return kernels.silu_and_mul(gate_up, cpu_kernels.silu_vector_block(gate_up.dtype))
        return super().forward(gate_up)


def act_and_mul(name: str) -> ActAndMul:
    """The gated product for a config's ``hidden_act``: :class:`SiluAndMul` for silu."""
    act = activation_function(name)
    return SiluAndMul() if act is F.silu else ActAndMul(act)

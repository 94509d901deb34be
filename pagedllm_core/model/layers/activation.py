"""Activation functions by the names Hugging Face configs use."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from pagedllm_core.errors import ModelLoadError

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

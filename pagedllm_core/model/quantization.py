"""The contract of weight quantization methods (registered through ``register_quantizers``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class QuantizationMethod(ABC):
    """Replaces some of a model's dense linear layers with quantized ones, in two steps.

    At build time the model asks ``create_linear`` for each projection; a method returns its own
    module for the layers it quantizes (and ``None`` to keep a dense ``nn.Linear``). At load time
    those modules receive the checkpoint's packed tensors under their Hugging Face names.
    """

    @classmethod
    def unsupported_reasons(cls, hf_config) -> list[str]:
        """Why the checkpoint described by ``hf_config`` cannot use this method; empty when it can."""
        return []

    @abstractmethod
    def create_linear(self, input_size: int, output_size: int, bias: bool, prefix: str) -> torch.nn.Module | None:
        """The module computing ``x @ W.T (+ b)`` for the layer named ``prefix``, or ``None`` to stay dense."""

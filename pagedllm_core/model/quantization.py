"""The contract of weight quantization methods (registered through ``register_quantizers``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pagedllm_core.model.source import ModelSource


@dataclass(frozen=True)
class QuantizationTarget:
    """What a quantization method is asked to run: the checkpoint, and the dtype and device of the model."""

    source: ModelSource
    hf_config: Any
    dtype: torch.dtype
    device: torch.device


class QuantizationMethod(ABC):
    """Runs some of a model's linear layers from quantized weights.

    The engine picks at most one method per model (``EngineConfig.quantization``), checks it with
    :meth:`unsupported_reasons`, builds it with the :class:`QuantizationTarget` and, once every
    checkpoint tensor is in the model, calls :meth:`process_weights_after_loading`, where the
    method swaps the layers it quantizes for its own modules.
    """

    @classmethod
    def unsupported_reasons(cls, target: QuantizationTarget) -> list[str]:
        """Why this method cannot run ``target``; empty when it can."""
        return []

    def __init__(self, target: QuantizationTarget):
        self.target = target

    @abstractmethod
    def process_weights_after_loading(self, model: nn.Module) -> int:
        """Swap the linear layers this method quantizes for its own modules; returns how many it swapped."""

"""The contract of weight quantization methods (registered through ``register_quantizers``)."""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pagedllm_core.errors import ModelLoadError
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

    The engine picks at most one method per model (``EngineConfig.quantization``) before the model
    is built, checks it with :meth:`unsupported_reasons` and builds it with the
    :class:`QuantizationTarget`. While the model is built, every linear layer is offered to
    :meth:`create_weights`: the method returns the module that will compute the layer, holding its
    quantized parameters (created in their final form, so dense copies never exist), or None to
    leave the layer dense. Checkpoint tensors then reach such a module through its
    ``load_checkpoint_tensor`` (see :class:`QuantizedLinear`). Once every tensor is in the model,
    :meth:`process_weights_after_loading` may repack what was loaded.
    """

    @classmethod
    def unsupported_reasons(cls, target: QuantizationTarget) -> list[str]:
        """Why this method cannot run ``target``; empty when it can."""
        return []

    def __init__(self, target: QuantizationTarget):
        self.target = target

    def create_weights(self, prefix: str, input_size: int, output_sizes: list[int], bias: bool) -> nn.Module | None:
        """The module computing the linear layer ``prefix`` (its path in the model, e.g.
        ``model.layers.0.self_attn.qkv_proj``), or None to keep it dense.

        :param input_size: the layer's input features.
        :param output_sizes: its output features, one entry per projection of a merged layer (q/k/v, gate/up).
        :param bias: whether the layer adds a bias.
        """
        return None

    def process_weights_after_loading(self, model: nn.Module) -> int:
        """Called once every checkpoint tensor is in ``model``; returns how many layers the method runs."""
        return sum(isinstance(module, QuantizedLinear) for module in model.modules())


class QuantizedLinear(nn.Module):
    """The base of modules :meth:`QuantizationMethod.create_weights` returns.

    Like the dense layers it replaces it computes ``[..., in_features] -> [..., out_features]`` and
    splits a merged output (``output_sizes``, :meth:`split`). Its parameters are its own business:
    the weight loader hands it each checkpoint tensor meant for it through
    :meth:`load_checkpoint_tensor`, and :meth:`checkpoint_pieces` says which tensors it needs, so a
    missing one is still an error.
    """

    def __init__(self, input_size: int, output_sizes: list[int]):
        super().__init__()
        self.in_features = input_size
        self.out_features = sum(output_sizes)
        self.output_sizes = list(output_sizes)

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return output.split(self.output_sizes, dim=-1)

    def checkpoint_pieces(self) -> set[tuple[str, int | None]]:
        """(parameter name, projection index or None) of every checkpoint tensor this module must get."""
        return set()

    def load_checkpoint_tensor(self, parameter_name: str, shard_index: int | None, tensor: torch.Tensor) -> None:
        """Take the checkpoint's ``parameter_name`` tensor of projection ``shard_index`` (None when not merged)."""
        raise ModelLoadError(f"{type(self).__name__} takes no checkpoint tensor {parameter_name!r}")

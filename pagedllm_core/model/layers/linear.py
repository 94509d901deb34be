"""Linear layers: several projections of one input in a single matmul, and weights prepacked for the CPU."""

from __future__ import annotations

import logging

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from pagedllm_core.model.quantization import QuantizationMethod

logger = logging.getLogger(__name__)


class SplitsOutput:
    """A layer whose output stacks several projections (q/k/v, gate/up) along its last dimension."""

    output_sizes: list[int]

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # output: [num_tokens, sum(output_sizes)] -> one [num_tokens, size] view per projection
        return output.split(self.output_sizes, dim=-1)


class MergedLinear(SplitsOutput, nn.Linear):
    """Projections of the same input (q/k/v, gate/up) stacked along the output dimension.

    Checkpoints store each projection separately; :meth:`load_shard` copies one of them into its
    rows, and :meth:`split` cuts the fused output back into the separate projections.
    """

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool):
        super().__init__(input_size, sum(output_sizes), bias=bias)
        self.output_sizes = list(output_sizes)

    def load_shard(self, parameter_name: str, shard_index: int, tensor: torch.Tensor) -> None:
        """Copy a checkpoint's ``weight`` or ``bias`` of projection ``shard_index`` into its rows."""
        start = sum(self.output_sizes[:shard_index])
        rows = getattr(self, parameter_name).data.narrow(0, start, self.output_sizes[shard_index])
        if rows.shape != tensor.shape:
            raise ValueError(
                f"shard {shard_index} {parameter_name} expects {tuple(rows.shape)}, got {tuple(tensor.shape)}"
            )
        rows.copy_(tensor)


class LinearFactory:
    """Builds a model's linear layers while the model is built: the module the quantization method
    creates for a layer, or else a dense ``nn.Linear`` (one projection) or :class:`MergedLinear` (several)."""

    def __init__(self, quantization: QuantizationMethod | None = None):
        self.quantization = quantization

    def __call__(self, prefix: str, input_size: int, output_sizes: int | list[int], bias: bool) -> nn.Module:
        sizes = [output_sizes] if isinstance(output_sizes, int) else list(output_sizes)
        if self.quantization is not None:
            module = self.quantization.create_weights(prefix, input_size, sizes, bias)
            if module is not None:
                return module
        if isinstance(output_sizes, int):
            return nn.Linear(input_size, output_sizes, bias=bias)
        return MergedLinear(input_size, sizes, bias=bias)


class PrepackedLinear(SplitsOutput, nn.Module):
    """``x @ W.T + b`` through oneDNN, with ``W`` reordered once into oneDNN's blocked layout.

    torch's ``nn.Linear`` on a CPU calls MKL's sgemm, which re-reads the weight in its plain layout
    on every call; the skinny matmuls of decoding (a few to a few hundred rows against 576-49,152
    columns) run markedly faster from the prepacked layout (docs/benchmarks.md, "Where the time
    goes"). The packed tensor is opaque: only ``torch.ops.mkldnn._linear_pointwise`` can read it.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.output_sizes = list(getattr(linear, "output_sizes", [linear.out_features]))
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach()))
        self.bias = linear.bias

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [..., in_features] -> [..., out_features]
        rows = hidden_states.reshape(-1, self.in_features)
        output = torch.ops.mkldnn._linear_pointwise(rows, self.packed_weight, self.bias, "none", [], "")
        return output.view(*hidden_states.shape[:-1], self.out_features)


def dense_linear_layers(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    """Every plain ``nn.Linear`` or :class:`MergedLinear` of ``model`` as ``(parent name, parent,
    attribute name, layer)``, so a caller can swap the layer for another module."""
    return [
        (parent_name, parent, name, child)
        for parent_name, parent in model.named_modules()
        for name, child in parent.named_children()
        if type(child) in (nn.Linear, MergedLinear)
    ]


def prepack_linear_layers(model: nn.Module) -> int:
    """Swap every dense linear layer of a loaded CPU ``model`` for a :class:`PrepackedLinear`; returns how many.

    Quantized and other custom projection modules are left alone. A tied ``lm_head`` gets its own
    packed copy while the embedding keeps the plain weight. oneDNN packs float32 on any x86 CPU,
    bfloat16 only where the CPU has native bfloat16 instructions.
    """
    if not torch.backends.mkldnn.is_available():
        logger.info("torch was built without oneDNN: linear layers keep torch's matmul")
        return 0
    targets = dense_linear_layers(model)
    for _, parent, name, layer in targets:
        setattr(parent, name, PrepackedLinear(layer))
    return len(targets)

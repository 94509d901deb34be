"""Linear layers: several projections of one input in a single matmul, and weights prepacked for the CPU."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from pagedllm_core.distributed.group import TensorParallelGroup
from pagedllm_core.distributed.partition import Shard
from pagedllm_core.model.layers.embedding import VocabParallelEmbedding
from pagedllm_core.model.native_op import NativeOp

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


@dataclass(frozen=True)
class OutputSplit:
    """A column-parallel layer (or vocab-parallel embedding): projection ``i`` holds rows ``shards[i]``
    of that projection's checkpoint weight and bias."""

    shards: tuple[Shard, ...]


@dataclass(frozen=True)
class InputSplit:
    """A row-parallel layer: it holds columns ``shard`` of the checkpoint weight; the partial outputs
    are summed over the ranks, so only one rank (``owns_bias``) adds the bias."""

    shard: Shard
    owns_bias: bool


class LinearFactory:
    """Builds a model's linear layers while the model is built: the module the quantization method
    creates for a layer, or else a dense ``nn.Linear`` (one projection) or :class:`MergedLinear` (several).

    Under tensor parallelism (``tp`` with several ranks) :meth:`column` and :meth:`row` layers hold
    only this rank's part and carry a ``tensor_parallel_split`` that tells the weight loader which part
    of each checkpoint tensor to read; plain calls build replicated layers.
    """

    def __init__(self, quantization: QuantizationMethod | None = None, tp: TensorParallelGroup | None = None):
        self.quantization = quantization
        self.tp = tp or TensorParallelGroup.single()

    def column(self, prefix: str, input_size: int, output_shards: Shard | list[Shard], bias: bool) -> nn.Module:
        """A column-parallel layer: this rank's rows of each projection (``output_shards``), no communication."""
        if isinstance(output_shards, Shard):
            layer = self(prefix, input_size, output_shards.size, bias)
            return self._split(layer, OutputSplit((output_shards,)))
        layer = self(prefix, input_size, [shard.size for shard in output_shards], bias)
        return self._split(layer, OutputSplit(tuple(output_shards)))

    def row(self, prefix: str, input_size: int, output_size: int, bias: bool, input_shard: Shard | None = None) -> nn.Module:
        """A row-parallel layer over this rank's input features (``input_shard``, default a balanced share);
        the caller sums its output over the ranks (``tp.all_reduce``)."""
        shard = input_shard or self.tp.shard(input_size)
        layer = self(prefix, shard.size, output_size, bias)
        return self._split(layer, InputSplit(shard, owns_bias=self.tp.is_driver))

    def vocab_embedding(self, num_embeddings: int, embedding_dim: int) -> nn.Module:
        """The token embedding: this rank's rows of the vocabulary under tensor parallelism."""
        if self.tp.world_size == 1:
            return nn.Embedding(num_embeddings, embedding_dim)
        embedding = VocabParallelEmbedding(self.tp, self.tp.shard(num_embeddings), embedding_dim)
        return self._split(embedding, OutputSplit((embedding.shard,)))

    def _split(self, layer: nn.Module, split: OutputSplit | InputSplit) -> nn.Module:
        if self.tp.world_size > 1:
            layer.tensor_parallel_split = split
        return layer

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

    def native_op(self) -> NativeOp:
        """:meth:`forward` on rows as oneDNN's registered operator, for the decoder program."""
        return NativeOp("mkldnn::_linear_pointwise", (self.packed_weight, self.bias, "none", [], ""))


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

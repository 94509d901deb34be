"""The ``gguf`` quantization method: which layers get their blocks, and where the blocks come from."""

from __future__ import annotations

import logging

import torch
from torch import nn

from pagedllm_core.model.gguf_parse_cache import reuse_gguf_parses
from pagedllm_core.model.layers.linear import MergedLinear, dense_linear_layers
from pagedllm_core.model.quantization import QuantizationMethod, QuantizationTarget
from pagedllm_quant_gguf.blocks import SUPPORTED_QUANT_TYPES, dequantize
from pagedllm_quant_gguf.layer import GGUFLinear

logger = logging.getLogger(__name__)


class GGUFQuantization(QuantizationMethod):
    """Gives every dense linear layer whose checkpoint tensors are blocks of one of ``SUPPORTED_QUANT_TYPES``
    (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) a :class:`GGUFLinear`; layers stored in other
    formats (or as floats) stay dense.

    The blocks of a layer are taken only if they dequantize bit for bit to the layer's loaded
    weight, after putting their rows in the weight's order: that finds the rows llama.cpp
    permutes (q and k) without knowing each architecture's permutation, and guarantees both paths
    of the layer hold the same weights.
    """

    @classmethod
    def unsupported_reasons(cls, target: QuantizationTarget) -> list[str]:
        reasons = []
        if not target.source.is_gguf:
            reasons.append("the checkpoint is not a GGUF file")
        if target.device.type != "cpu":
            reasons.append(f"its kernel runs on the CPU, the model on {target.device.type}")
        if target.dtype != torch.float32:
            reasons.append(f"its kernel computes in float32, the model runs in {target.dtype}")
        return reasons

    def __init__(self, target: QuantizationTarget):
        from pagedllm_quant_gguf.kernels import load_kernels

        super().__init__(target)
        self._kernels = load_kernels()

    def process_weights_after_loading(self, model: nn.Module) -> int:
        import gguf

        source = self.target.source
        with reuse_gguf_parses(source.gguf_parses):
            reader = gguf.GGUFReader(source.directory / source.gguf_file)
        tensors = {tensor.name: tensor for tensor in reader.tensors}
        name_map = gguf.get_tensor_name_map(_architecture(reader), self.target.hf_config.num_hidden_layers)
        owners = {id(parameter): name for name, parameter in model.named_parameters()}
        swapped = 0
        for parent_name, parent, name, layer in dense_linear_layers(model):
            layer_name = f"{parent_name}.{name}" if parent_name else name
            checkpoint_names = _checkpoint_weight_names(model, layer_name, layer, owners[id(layer.weight)])
            found = _matching_blocks(layer, [_gguf_tensor(tensors, name_map, names) for names in checkpoint_names])
            if found is None:
                logger.debug("gguf: %s stays dense", layer_name)
                continue
            blocks, quant_type = found
            setattr(parent, name, GGUFLinear(layer, blocks, quant_type, self._kernels))
            swapped += 1
        return swapped


def _architecture(reader) -> object:
    import gguf

    field = reader.fields["general.architecture"]
    name = bytes(field.parts[field.data[0]]).decode()
    return {value: key for key, value in gguf.MODEL_ARCH_NAMES.items()}[name]


def _checkpoint_weight_names(model: nn.Module, layer_name: str, layer: nn.Linear, owner: str) -> list[list[str]]:
    """Per projection of the layer (one, or each shard of a merged layer): the Hugging Face names its
    weight may be stored under, best first (a tied ``lm_head`` is stored as the embedding)."""
    if not isinstance(layer, MergedLinear):
        return [[f"{layer_name}.weight", owner]]
    parent, _, leaf = layer_name.rpartition(".")
    shards = sorted(
        (index, shard) for shard, (merged, index) in model.merged_projections.items() if merged == leaf
    )
    return [[f"{parent}.{shard}.weight"] for _, shard in shards]


def _gguf_tensor(tensors: dict, name_map, hf_names: list[str]):
    for hf_name in hf_names:
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight",))
        if gguf_name in tensors:
            return tensors[gguf_name]
    return None


def _matching_blocks(layer: nn.Linear, gguf_tensors: list) -> tuple[torch.Tensor, int] | None:
    """The layer's blocks as ``[out_features, bytes per row]`` uint8 rows in the weight's row order,
    with their quantization type; None unless they dequantize exactly to ``layer.weight``."""
    if any(tensor is None for tensor in gguf_tensors):
        return None
    quant_types = {int(tensor.tensor_type) for tensor in gguf_tensors}
    if len(quant_types) != 1 or not quant_types <= set(SUPPORTED_QUANT_TYPES):
        return None
    quant_type = quant_types.pop()
    blocks = torch.cat([torch.tensor(tensor.data.reshape(tensor.data.shape[0], -1)) for tensor in gguf_tensors])
    weight = layer.weight.detach()
    if blocks.shape[0] != weight.shape[0]:
        return None
    order = _row_order(dequantize(blocks, quant_type, weight.shape[1]), weight)
    if order is None:
        return None
    blocks = blocks[order].contiguous()
    return blocks, quant_type


def _row_order(dequantized: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """Indices that put ``dequantized``'s rows in ``weight``'s order; None unless every row has an exact match."""
    if torch.equal(dequantized, weight):
        return torch.arange(weight.shape[0])
    row_of = {row.numpy().tobytes(): index for index, row in enumerate(dequantized)}
    order = [row_of.get(row.numpy().tobytes()) for row in weight]
    if None in order:
        return None
    return torch.tensor(order)

"""Copying checkpoint tensors into a model by their Hugging Face names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.checkpoint import CheckpointTensor, LoadedTensor
from pagedllm_core.model.layers.linear import InputSplit, MergedLinear, OutputSplit
from pagedllm_core.model.quantization import QuantizedLinear

# A parameter name, and for a MergedLinear's parameter the index of one of its projections.
Piece = tuple[str, int | None]

# Checkpoint names of an FP8 KV cache's per-layer scales (vLLM's, llm-compressor's).
KV_SCALES = ("k_scale", "v_scale")


def load_named_tensors(
    model: nn.Module,
    weights: Iterable[tuple[str, torch.Tensor | CheckpointTensor]],
    merged_projections: Mapping[str, tuple[str, int]],
) -> None:
    """Copy each checkpoint tensor into the parameter of the same name, routing merged projections.

    :param merged_projections: checkpoint module name -> (merged module name, projection index),
        e.g. ``{"q_proj": ("qkv_proj", 0)}``: ``layers.0.self_attn.q_proj.weight`` fills the first
        rows of ``layers.0.self_attn.qkv_proj.weight``.

    Tensors the model has no place for (rotary caches, a tied ``lm_head``) are skipped; a parameter
    the checkpoint never fills is an error, so that a naming mismatch cannot leave random weights.
    A tensor-parallel layer (one with a ``tensor_parallel_split``) reads only its rank's part.
    """
    parameters = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    quantized = {name: module for name, module in model.named_modules() if isinstance(module, QuantizedLinear)}
    splits = {name: module.tensor_parallel_split for name, module in model.named_modules() if hasattr(module, "tensor_parallel_split")}
    missing = _pieces(model)
    for name, entry in weights:
        module_name, _, parameter_name = name.rpartition(".")
        parent, _, leaf = module_name.rpartition(".")
        shard_index = None
        if leaf in merged_projections:
            merged_name, shard_index = merged_projections[leaf]
            module_name = f"{parent}.{merged_name}" if parent else merged_name
        target = f"{module_name}.{parameter_name}"
        if target not in parameters and module_name not in quantized and parameter_name not in KV_SCALES:
            continue  # never read what the model has no place for
        tensor = _read(entry, splits.get(module_name), parameter_name, shard_index)
        if module_name in quantized:
            # A quantization method's module takes its tensors itself (and may need none of them).
            quantized[module_name].load_checkpoint_tensor(parameter_name, shard_index, tensor)
            missing.discard((target, shard_index))
        elif shard_index is not None:
            try:
                model.get_submodule(module_name).load_shard(parameter_name, shard_index, tensor)
            except ValueError as error:
                raise ModelLoadError(f"checkpoint tensor {name}: {error}") from None
            missing.discard((target, shard_index))
        elif parameter_name in KV_SCALES and f"{module_name}.attn.{parameter_name}" in buffers:
            # An FP8 KV cache's per-layer scale, stored on the attention module (self_attn.k_scale).
            buffers[f"{module_name}.attn.{parameter_name}"].copy_(tensor.reshape(()))
        elif name in parameters:
            parameter = parameters[name]
            if parameter.shape != tensor.shape:
                raise ModelLoadError(
                    f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, "
                    f"the model expects {tuple(parameter.shape)}"
                )
            parameter.data.copy_(tensor)
            missing.discard((name, None))
    if missing:
        shown = ", ".join(
            name if shard is None else f"{name} (projection {shard})" for name, shard in sorted(missing, key=str)[:5]
        )
        raise ModelLoadError(f"the checkpoint lacks {len(missing)} weights the model needs, e.g. {shown}")


def _read(
    entry: torch.Tensor | CheckpointTensor, split: OutputSplit | InputSplit | None, parameter_name: str, shard_index: int | None
) -> torch.Tensor:
    """The part of a checkpoint tensor this rank keeps for a parameter of a layer split as ``split``."""
    if isinstance(entry, torch.Tensor):
        entry = LoadedTensor(entry)
    if isinstance(split, OutputSplit):
        return entry.read(0, split.shards[shard_index or 0])
    if isinstance(split, InputSplit):
        if parameter_name != "bias":
            return entry.read(1, split.shard)
        bias = entry.read()
        return bias if split.owns_bias else torch.zeros_like(bias)
    return entry.read()


def _pieces(model: nn.Module) -> set[Piece]:
    """Every (parameter, projection) the checkpoint must fill."""
    pieces: set[Piece] = set()
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            pieces.update((f"{module_name}.{name}", shard) for name, shard in module.checkpoint_pieces())
            seen.update(id(parameter) for parameter in module.parameters())
            continue
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in seen:
                continue  # tied weights are filled once, under their first name
            seen.add(id(parameter))
            name = f"{module_name}.{parameter_name}" if module_name else parameter_name
            if isinstance(module, MergedLinear):
                pieces.update((name, index) for index in range(len(module.output_sizes)))
            else:
                pieces.add((name, None))
    return pieces

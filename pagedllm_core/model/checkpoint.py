"""Reading a checkpoint's tensors under their Hugging Face names, from safetensors or GGUF."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch

from pagedllm_core.distributed.partition import Shard
from pagedllm_core.model.gguf_parse_cache import reuse_gguf_parses
from pagedllm_core.model.source import ModelSource


class CheckpointTensor(ABC):
    """A checkpoint tensor that is read when asked for: whole, or only rows or columns of it (a
    tensor-parallel rank's shard), so that a rank reads no more of a safetensors file than it keeps."""

    @abstractmethod
    def read(self, dim: int | None = None, shard: Shard | None = None) -> torch.Tensor:
        """The tensor, or its slice ``shard`` along ``dim`` (0 or 1)."""


class LoadedTensor(CheckpointTensor):
    """A tensor already in memory (GGUF files are dequantized as a whole by transformers' reader)."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def read(self, dim: int | None = None, shard: Shard | None = None) -> torch.Tensor:
        if shard is None:
            return self.tensor
        return self.tensor.narrow(dim, shard.start, shard.size)


class SafetensorsTensor(CheckpointTensor):
    """A tensor of an open safetensors file, memory-mapped; a slice reads only its own bytes."""

    def __init__(self, checkpoint, name: str):
        self.checkpoint = checkpoint
        self.name = name

    def read(self, dim: int | None = None, shard: Shard | None = None) -> torch.Tensor:
        if shard is None:
            return self.checkpoint.get_tensor(self.name)
        index = (slice(None),) * dim + (slice(shard.start, shard.end),)
        return self.checkpoint.get_slice(self.name)[index]


def checkpoint_entries(source: ModelSource, hf_config, dtype: torch.dtype) -> Iterator[tuple[str, CheckpointTensor]]:
    """Every weight of the checkpoint as ``(hf_name, entry)``; an entry must be read before the next is taken."""
    if source.is_gguf:
        return ((name, LoadedTensor(tensor)) for name, tensor in _gguf_tensors(source, hf_config, dtype))
    return _safetensors_entries(source)


def checkpoint_tensors(source: ModelSource, hf_config, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Every weight of the checkpoint as ``(hf_name, tensor)``, on the CPU."""
    return ((name, entry.read()) for name, entry in checkpoint_entries(source, hf_config, dtype))


def _safetensors_entries(source: ModelSource) -> Iterator[tuple[str, CheckpointTensor]]:
    from safetensors import safe_open

    # One tensor at a time, so peak memory stays near the model's own size.
    for path in source.safetensors_files():
        with safe_open(path, framework="pt", device="cpu") as checkpoint:
            for name in checkpoint.keys():
                yield name, SafetensorsTensor(checkpoint, name)


def _gguf_tensors(source: ModelSource, hf_config, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    # transformers maps GGUF tensor names onto the parameter names of its own model class (and
    # undoes llama.cpp's q/k permutation); a weightless copy on the meta device is enough for that.
    with torch.device("meta"):
        name_template = AutoModelForCausalLM.from_config(hf_config)
    with reuse_gguf_parses(source.gguf_parses):
        parsed = load_gguf_checkpoint(
            str(source.directory / source.gguf_file),
            return_tensors=True,
            model_to_load=name_template,
            torch_dtype=dtype,
        )
    yield from parsed["tensors"].items()

"""Reading a checkpoint's tensors under their Hugging Face names, from safetensors or GGUF."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from pagedllm_core.model.gguf_parse_cache import reuse_gguf_parses
from pagedllm_core.model.source import ModelSource


def checkpoint_tensors(source: ModelSource, hf_config, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Every weight of the checkpoint as ``(hf_name, tensor)``, on the CPU."""
    if source.is_gguf:
        return _gguf_tensors(source, hf_config, dtype)
    return _safetensors_tensors(source)


def _safetensors_tensors(source: ModelSource) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    # One tensor at a time, so peak memory stays near the model's own size.
    for path in source.safetensors_files():
        with safe_open(path, framework="pt", device="cpu") as checkpoint:
            for name in checkpoint.keys():
                yield name, checkpoint.get_tensor(name)


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

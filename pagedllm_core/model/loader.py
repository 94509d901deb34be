"""Turning an :class:`EngineConfig` into a model with weights, its config and its tokenizer.

The engine calls these steps in order. The attention backend is built between reading the config
and building the model, because it needs the attention shape and the model needs the backend::

    source = resolve_model_source(config)
    hf_config = load_hf_config(source)
    shape = attention_shape(hf_config)             # -> AttentionSpec -> backend instance
    dtype = resolve_dtype(config.dtype, hf_config, source)
    model = build_model(hf_config, backend, dtype, device)
    load_weights(model, source, hf_config)
    tokenizer = load_tokenizer(source, config)
    max_model_len = context_length(hf_config)       # the model's limit; config.max_model_len may lower it
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.config import EngineConfig
from pagedllm_core.distributed.group import TensorParallelGroup
from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.attention_shape import AttentionShape, attention_shape
from pagedllm_core.model.checkpoint import checkpoint_entries
from pagedllm_core.model.gguf_parse_cache import reuse_gguf_parses
from pagedllm_core.model.layers.linear import LinearFactory
from pagedllm_core.model.models import resolve_model_class
from pagedllm_core.model.quantization import QuantizationMethod
from pagedllm_core.model.source import ModelSource, resolve_model_source

__all__ = [
    "AttentionShape",
    "attention_shape",
    "build_model",
    "context_length",
    "load_hf_config",
    "load_tokenizer",
    "load_weights",
    "resolve_dtype",
    "resolve_model_source",
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_hf_config(source: ModelSource):
    """The model's ``transformers`` config (read from ``config.json`` or the GGUF metadata)."""
    from transformers import AutoConfig

    try:
        with reuse_gguf_parses(source.gguf_parses):
            return AutoConfig.from_pretrained(source.directory, gguf_file=source.gguf_file)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"model {source.name!r}: could not read its config: {error}") from error


def resolve_dtype(setting: str, hf_config, source: ModelSource) -> torch.dtype:
    """``EngineConfig.dtype`` as a torch dtype; ``auto`` is the checkpoint's float dtype.

    GGUF files hold quantized blocks rather than one float dtype, so ``auto`` dequantizes them to
    bfloat16; a config without a float dtype falls back to float32.
    """
    if setting != "auto":
        return DTYPES[setting]
    if source.is_gguf:
        return torch.bfloat16
    checkpoint_dtype = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    if isinstance(checkpoint_dtype, str):
        checkpoint_dtype = DTYPES.get(checkpoint_dtype)
    return checkpoint_dtype if checkpoint_dtype in DTYPES.values() else torch.float32


def build_model(
    hf_config,
    attention: AttentionBackend,
    dtype: torch.dtype,
    device: torch.device | str,
    quantization: QuantizationMethod | None = None,
    tp: TensorParallelGroup | None = None,
) -> nn.Module:
    """Our implementation of the config's architecture, on ``device`` in ``dtype``, weights not yet loaded;
    with a ``quantization`` method, the linear layers it takes are its own modules from the start; with a
    tensor-parallel group of several ranks, this rank's shard of the model."""
    model_class = resolve_model_class(hf_config)
    # Random initialisation would be wasted: load_weights fills every parameter or raises.
    with _no_weight_init(), _default_dtype(dtype), torch.device(device):
        model = model_class(hf_config, attention, LinearFactory(quantization, tp))
    return model.eval().requires_grad_(False)


def load_weights(model: nn.Module, source: ModelSource, hf_config) -> None:
    """Stream the checkpoint into ``model`` (GGUF is dequantized to the model's dtype on the way); a
    tensor-parallel shard reads only its part of each safetensors tensor."""
    dtype = next(model.parameters()).dtype
    model.load_weights(checkpoint_entries(source, hf_config, dtype))


def load_tokenizer(source: ModelSource, config: EngineConfig):
    """The tokenizer named by ``EngineConfig.tokenizer`` (a directory or Hub id), else the model's own."""
    from transformers import AutoTokenizer

    try:
        if config.tokenizer is not None:
            return AutoTokenizer.from_pretrained(config.tokenizer)
        with reuse_gguf_parses(source.gguf_parses):
            return AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
    except (OSError, ValueError, KeyError) as error:
        name = config.tokenizer or source.name
        raise ModelLoadError(f"tokenizer {name!r} could not be loaded: {error}") from error


def context_length(hf_config) -> int:
    """The longest sequence the model supports, in tokens.

    A sliding attention window also bounds it: the paged attention backends attend to the whole
    context, which matches the model only while the context fits in its window.
    """
    length = hf_config.max_position_embeddings
    window = _sliding_window(hf_config)
    return min(length, window) if window else length


def _sliding_window(hf_config) -> int | None:
    window = getattr(hf_config, "sliding_window", None)
    layer_types = getattr(hf_config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return window


@contextlib.contextmanager
def _no_weight_init():
    """Make ``torch.nn.init``'s in-place initialisers (which modules' ``reset_parameters`` call) do nothing.

    transformers' ``no_init_weights`` does the same, but importing it imports ``transformers.modeling_utils``,
    about a second of every start-up (docs/benchmarks.md).
    """
    initialisers = {
        name: getattr(nn.init, name) for name in dir(nn.init) if name.endswith("_") and not name.startswith("_")
    }
    for name in initialisers:
        setattr(nn.init, name, _leave_unchanged)
    try:
        yield
    finally:
        for name, initialiser in initialisers.items():
            setattr(nn.init, name, initialiser)


def _leave_unchanged(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)

"""Loading a model for embeddings: the generation loader's steps with prompt attention and a pooler, no KV cache."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ConfigError
from pagedllm_core.model import loader
from pagedllm_core.model.layers.linear import prepack_linear_layers
from pagedllm_core.model.model_info import resolve_model_info
from pagedllm_core.model.source import ModelSource
from pagedllm_core.pooling.attention import PromptAttention
from pagedllm_core.pooling.config import PoolingConfig
from pagedllm_core.pooling.pooler import Pooler
from pagedllm_core.pooling.task import is_encoder, resolve_pooler, resolve_task
from pagedllm_core.worker.cpu_process import configure_cpu_process
from pagedllm_core.worker.model_setup import attention_spec, prepacks_linear_weights

logger = logging.getLogger(__name__)


@dataclass
class EmbeddingModel:
    """A loaded embedding model and what requests are checked against."""

    source: ModelSource
    model: nn.Module
    attention: PromptAttention
    pooler: Pooler
    tokenizer: Any
    num_layers: int
    hidden_size: int
    max_model_len: int
    matryoshka_dimensions: list[int] | None  # the sizes it was trained to be cut to; None when not Matryoshka
    device: torch.device


def detect_task(config: EngineConfig, pooling: PoolingConfig) -> str:
    """``generate`` or ``embed`` for this model, reading only its config files."""
    source = loader.resolve_model_source(config)
    if source.is_gguf and pooling.task != "embed":
        return "generate"  # GGUF files hold decoders; parsing one here would only slow start-up
    return resolve_task(pooling, source, loader.load_hf_config(source))


def load_embedding_model(config: EngineConfig, pooling: PoolingConfig) -> EmbeddingModel:
    info = resolve_model_info(config)
    source, hf_config, dtype, device = info.source, info.hf_config, info.dtype, info.device
    if device.type == "cpu":
        configure_cpu_process(config.num_cpu_threads)
    if resolve_task(pooling, source, hf_config) != "embed":
        raise ConfigError(f"model {source.name!r} does not serve task 'embed' with task={pooling.task!r}")
    if config.tensor_parallel_size > 1:
        raise ConfigError("embedding models run on one rank: tensor_parallel_size must be 1 with task 'embed'")
    pooler, trained_length = resolve_pooler(pooling, source, hf_config)
    spec = attention_spec(config, info)  # its block size is unused: no KV cache
    attention = PromptAttention(spec, causal=not is_encoder(hf_config))
    model = loader.build_model(hf_config, attention, dtype, device)
    loader.load_weights(model, source, hf_config)
    if prepacks_linear_weights(device, dtype):
        prepack_linear_layers(model)
    # Without --max-model-len, the longest input the checkpoint was trained for, when it says.
    max_model_len = info.max_model_len
    if config.max_model_len is None and trained_length:
        max_model_len = min(max_model_len, trained_length)
    logger.info("embedding model: %s pooling, normalize=%s, %s", pooler.pooling_type.value, pooler.normalize, dtype)
    return EmbeddingModel(
        source=source,
        model=model,
        attention=attention,
        pooler=pooler,
        tokenizer=loader.load_tokenizer(source, config),
        num_layers=loader.attention_shape(hf_config).num_layers,
        hidden_size=hf_config.hidden_size,
        max_model_len=max_model_len,
        matryoshka_dimensions=_matryoshka_dimensions(hf_config),
        device=device,
    )


def _matryoshka_dimensions(hf_config) -> list[int] | None:
    """vLLM's config fields: ``matryoshka_dimensions`` lists the allowed sizes, ``is_matryoshka`` allows any."""
    listed = getattr(hf_config, "matryoshka_dimensions", None)
    if listed:
        return sorted(listed)
    if getattr(hf_config, "is_matryoshka", False):
        return list(range(1, hf_config.hidden_size + 1))
    return None

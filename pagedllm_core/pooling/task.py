"""Which task a checkpoint serves, and the pooler an embedding model runs with."""

from __future__ import annotations

from typing import Literal

from pagedllm_core.errors import ConfigError
from pagedllm_core.model.models import ENCODER_ARCHITECTURES, architecture_name
from pagedllm_core.model.source import ModelSource
from pagedllm_core.pooling.config import PoolingConfig
from pagedllm_core.pooling.pooler import Pooler, PoolingType
from pagedllm_core.pooling.sentence_transformers import is_sentence_transformers, read_sentence_transformers_config


def is_encoder(hf_config) -> bool:
    return architecture_name(hf_config) in ENCODER_ARCHITECTURES


def resolve_task(pooling: PoolingConfig, source: ModelSource, hf_config) -> Literal["generate", "embed"]:
    """``task``, with ``auto`` decided by the checkpoint: an encoder or a sentence-transformers model embeds."""
    encoder = is_encoder(hf_config)
    if pooling.task == "auto":
        return "embed" if encoder or is_sentence_transformers(source.directory) else "generate"
    if pooling.task == "generate" and encoder:
        raise ConfigError(
            f"task 'generate': {architecture_name(hf_config)} is an encoder without a language-model head; "
            "it serves task 'embed' only"
        )
    return pooling.task


def resolve_pooler(pooling: PoolingConfig, source: ModelSource, hf_config) -> tuple[Pooler, int | None]:
    """The pooler (override, else sentence-transformers config, else CLS for encoders and LAST for
    decoders, normalized) and the longest input the checkpoint was trained for, if it says."""
    pooling_type, normalize, max_seq_length = None, True, None
    if is_sentence_transformers(source.directory):
        trained = read_sentence_transformers_config(source.directory)
        pooling_type, normalize, max_seq_length = trained.pooling_type, trained.normalize, trained.max_seq_length
    override = pooling.override_pooler_config
    pooling_type = override.pooling_type or pooling_type or ("CLS" if is_encoder(hf_config) else "LAST")
    normalize = normalize if override.normalize is None else override.normalize
    return Pooler(PoolingType(pooling_type), normalize), max_seq_length

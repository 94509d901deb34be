"""Worker start-up for speculative decoding: load the draft model, build the speculator."""

from __future__ import annotations

import logging

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ConfigError
from pagedllm_core.model import loader
from pagedllm_core.model.model_info import ModelInfo, resolve_model_info
from pagedllm_core.model.native_decode import build_native_decoder
from pagedllm_core.registry import Registry
from pagedllm_core.spec_decode.draft_model import DraftModelProposer, LoadedDraft
from pagedllm_core.spec_decode.speculator import NgramProposer, Speculator
from pagedllm_core.worker.kv_cache import KVCacheShape, allocate_kv_cache

logger = logging.getLogger(__name__)


def draft_engine_config(config: EngineConfig) -> EngineConfig:
    """The target's config with the draft's checkpoint (the target's own when none is named) and quantization."""
    speculative = config.speculative_config
    return config.model_copy(
        update={
            "model": speculative.model or config.model,
            "quantization": speculative.quantization or "auto",
            "speculative_config": None,
        }
    )


def load_draft_model(config: EngineConfig, registry: Registry, target: ModelInfo) -> LoadedDraft | None:
    """The draft model of a ``draft_model`` speculative config, loaded beside the target; else None."""
    speculative = config.speculative_config
    if speculative is None:
        return None
    if config.sampler != "default":
        raise ConfigError(
            f"speculative decoding verifies drafts under the default sampler's distribution; sampler "
            f"{config.sampler!r} cannot be combined with speculative_config (use sampler 'default')"
        )
    if not speculative.uses_draft_model:
        return None
    from pagedllm_core.worker.model_setup import attention_spec, load_model

    draft_config = draft_engine_config(config)
    info = resolve_model_info(draft_config)
    if info.vocab_size != target.vocab_size:
        raise ConfigError(
            f"the draft model's vocabulary ({info.vocab_size} tokens) differs from the target's ({target.vocab_size}); "
            f"a draft must share the target's tokenizer"
        )
    model, attention = load_model(draft_config, registry, info)
    shape = loader.attention_shape(info.hf_config)
    spec = attention_spec(draft_config, info)
    logger.info("speculative decoding: draft model %s (quantization %s)", info.source, draft_config.quantization)
    cache_shape = KVCacheShape(shape.num_layers, shape.num_kv_heads, shape.head_size, spec.kv_cache_dtype)
    return LoadedDraft(model, attention, cache_shape)


def build_speculator(config: EngineConfig, runner, draft: LoadedDraft | None, num_blocks: int) -> Speculator | None:
    """The runner's speculator (None without speculative decoding); a draft model gets its KV cache here."""
    speculative = config.speculative_config
    if speculative is None:
        return None
    max_model_len = runner.batch.max_model_len
    if draft is None:
        proposer = NgramProposer(speculative, max_model_len)
    else:
        kv_cache = allocate_kv_cache(
            num_blocks, config.block_size, draft.cache_shape, runner.device, type(draft.attention)
        )
        native_decoder = build_native_decoder(
            draft.model, draft.attention, runner.device, config.enforce_eager, lora_enabled=False
        )
        proposer = DraftModelProposer(draft, kv_cache, max_model_len, native_decoder)
    return Speculator(speculative, proposer, config.seed)

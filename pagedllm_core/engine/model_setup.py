"""Engine start-up: load the model, pick the plugins, size the KV pool, build the runner."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.kv_cache import KVCacheShape, allocate_kv_cache, num_blocks_for_budget
from pagedllm_core.engine.model_runner import ModelRunner
from pagedllm_core.errors import ConfigError, UnsupportedConfigError
from pagedllm_core.model import loader
from pagedllm_core.model.layers.linear import prepack_linear_layers
from pagedllm_core.model.quantization import QuantizationTarget
from pagedllm_core.registry import PluginKind, Registry

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """Everything the engine gets from start-up."""

    runner: ModelRunner
    tokenizer: Any
    hf_config: Any
    dtype: torch.dtype
    max_model_len: int
    num_kv_blocks: int
    eos_token_ids: frozenset[int]
    vocab_size: int


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was requested but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX-512 BF16); without it torch
    emulates bfloat16 matmuls, which is many times slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def fit_dtype_to_device(config: EngineConfig, dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """With ``dtype="auto"``, run in float32 on a CPU that has no fast half-precision matmuls."""
    if config.dtype != "auto" or device.type != "cpu" or dtype == torch.float32 or cpu_has_native_bfloat16():
        return dtype
    logger.info("dtype auto: this CPU has no native bfloat16 matmuls, so the model runs in float32")
    return torch.float32


def prepacks_linear_weights(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the model's linear layers run from oneDNN-prepacked weights: on a CPU, in float32, or
    in bfloat16 where the CPU has native bfloat16 (oneDNN refuses to pack it otherwise)."""
    return device.type == "cpu" and (dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_has_native_bfloat16()))


def resolve_max_model_len(config: EngineConfig, model_context: int) -> int:
    if config.max_model_len is None:
        return model_context
    if config.max_model_len > model_context:
        raise ConfigError(
            f"max_model_len ({config.max_model_len}) exceeds the model's context length ({model_context})"
        )
    return config.max_model_len


# What ``attention_backend="auto"`` tries, fastest first, per device type; the torch reference runs anywhere.
AUTO_ATTENTION_BACKENDS = {"cpu": ("cpu", "torch"), "cuda": ("cuda", "triton", "torch")}


def build_attention(config: EngineConfig, registry: Registry, spec: AttentionSpec):
    """Instantiate the configured attention backend after it confirms it can run ``spec``."""
    if config.attention_backend == "auto":
        return _build_auto_attention(registry, spec)
    backend_class = registry.resolve(PluginKind.ATTENTION_BACKEND, config.attention_backend)
    reasons = backend_class.unsupported_reasons(spec)
    if reasons:
        alternatives = [
            name
            for name in registry.names(PluginKind.ATTENTION_BACKEND)
            if name != config.attention_backend and not _reasons_of(registry, name, spec)
        ]
        raise UnsupportedConfigError(
            f"attention backend {config.attention_backend!r} cannot run this model: {'; '.join(reasons)}. "
            f"Backends that can: {', '.join(alternatives) or 'none'}"
        )
    return backend_class(spec)


def _build_auto_attention(registry: Registry, spec: AttentionSpec):
    """The first preferred backend that is installed, can run ``spec`` and starts (a kernel may fail to build)."""
    installed = set(registry.names(PluginKind.ATTENTION_BACKEND))
    candidates = [name for name in AUTO_ATTENTION_BACKENDS.get(spec.device.type, ("torch",)) if name in installed]
    for name in candidates:
        if _reasons_of(registry, name, spec):
            continue
        try:
            backend = registry.resolve(PluginKind.ATTENTION_BACKEND, name)(spec)
        except Exception as error:  # noqa: BLE001 - any start-up failure means: try the next backend
            if name == candidates[-1]:
                raise
            logger.warning("attention backend %r failed to start (%s); trying the next one", name, error)
            continue
        logger.info("attention backend auto: using %r", name)
        return backend
    raise UnsupportedConfigError(
        f"no installed attention backend can run this model on {spec.device.type} (tried {', '.join(candidates)})"
    )


def _reasons_of(registry: Registry, name: str, spec: AttentionSpec) -> list[str]:
    try:
        return registry.resolve(PluginKind.ATTENTION_BACKEND, name).unsupported_reasons(spec)
    except ConfigError as error:
        return [str(error)]


# What ``quantization="auto"`` runs, by checkpoint format, when that method is installed and can run the model.
AUTO_QUANTIZATION = {"gguf": "gguf"}


def build_quantization(config: EngineConfig, registry: Registry, target: QuantizationTarget):
    """The configured quantization method, built for ``target``; None for dense weights."""
    name = config.quantization
    if name == "auto":
        name = AUTO_QUANTIZATION.get("gguf" if target.source.is_gguf else "dense", "none")
        if name not in registry.names(PluginKind.QUANTIZER):
            return None
    if name == "none":
        return None
    method_class = registry.resolve(PluginKind.QUANTIZER, name)
    reasons = method_class.unsupported_reasons(target)
    if reasons and config.quantization == "auto":
        logger.info("quantization auto: not using %r (%s)", name, "; ".join(reasons))
        return None
    if reasons:
        raise UnsupportedConfigError(f"quantization {name!r} cannot run this model: {'; '.join(reasons)}")
    return method_class(target)


def available_device_bytes(config: EngineConfig, device: torch.device) -> int | None:
    """On CUDA: what the KV cache may take of the device after the weights (and a margin for activations)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    in_use = total - free
    return max(int(total * config.gpu_memory_utilization) - in_use, 0)


def eos_token_ids(tokenizer, hf_config) -> frozenset[int]:
    """The tokenizer's EOS plus every EOS the model config lists (some models end turns with several)."""
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(hf_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(value)
    return frozenset(ids)


def load_model_for_engine(config: EngineConfig, registry: Registry) -> LoadedModel:
    device = resolve_device(config.device)
    if device.type == "cpu" and config.num_cpu_threads is not None:
        torch.set_num_threads(config.num_cpu_threads)
    source = loader.resolve_model_source(config)
    hf_config = loader.load_hf_config(source)
    dtype = fit_dtype_to_device(config, loader.resolve_dtype(config.dtype, hf_config, source), device)
    max_model_len = resolve_max_model_len(config, loader.context_length(hf_config))
    shape = loader.attention_shape(hf_config)

    spec = AttentionSpec(
        num_heads=shape.num_heads,
        num_kv_heads=shape.num_kv_heads,
        head_size=shape.head_size,
        scale=shape.scale,
        block_size=config.block_size,
        kv_cache_dtype=dtype,
        device=device,
    )
    attention = build_attention(config, registry, spec)
    model = loader.build_model(hf_config, attention, dtype, device)
    loader.load_weights(model, source, hf_config)
    model.eval()
    quantization = build_quantization(config, registry, QuantizationTarget(source, hf_config, dtype, device))
    if quantization is not None:
        logger.info(
            "quantization %r runs %d linear layers", config.quantization, quantization.process_weights_after_loading(model)
        )
    if prepacks_linear_weights(device, dtype):
        logger.info("prepacked %d linear layers for oneDNN", prepack_linear_layers(model))
    tokenizer = loader.load_tokenizer(source, config)

    cache_shape = KVCacheShape(shape.num_layers, shape.num_kv_heads, shape.head_size, dtype)
    num_blocks = num_blocks_for_budget(config, cache_shape, available_device_bytes(config, device), max_model_len)
    blocks_per_sequence = -(-max_model_len // config.block_size)
    if num_blocks < blocks_per_sequence:
        raise ConfigError(
            f"the KV cache holds {num_blocks} blocks of {config.block_size} tokens but one sequence of "
            f"max_model_len={max_model_len} needs {blocks_per_sequence}; raise kv_cache_memory "
            f"(each block takes {cache_shape.bytes_per_block(config.block_size)} bytes) or lower max_model_len"
        )
    kv_cache = allocate_kv_cache(num_blocks, config.block_size, cache_shape, device)
    logger.info(
        "KV cache: %d blocks of %d tokens (%.1f MiB, %d tokens)",
        num_blocks, config.block_size, kv_cache.numel() * kv_cache.element_size() / 2**20, num_blocks * config.block_size,
    )
    sampler = registry.resolve(PluginKind.SAMPLER, config.sampler)(config)
    vocab_size = hf_config.vocab_size
    runner = ModelRunner(model, attention, sampler, kv_cache, config.block_size, vocab_size, device)
    return LoadedModel(
        runner=runner,
        tokenizer=tokenizer,
        hf_config=hf_config,
        dtype=dtype,
        max_model_len=max_model_len,
        num_kv_blocks=num_blocks,
        eos_token_ids=eos_token_ids(tokenizer, hf_config),
        vocab_size=vocab_size,
    )

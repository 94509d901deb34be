"""Worker start-up: pick the plugins, load the model, size the KV pool, build the runner."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.config import EngineConfig
from pagedllm_core.worker.kv_cache import KVCacheShape, allocate_kv_cache, num_blocks_for_budget
from pagedllm_core.worker.model_runner import ModelRunner
from pagedllm_core.errors import ConfigError, UnsupportedConfigError
from pagedllm_core.model import loader
from pagedllm_core.model.model_info import ModelInfo, cpu_has_native_bfloat16
from pagedllm_core.model.layers.linear import prepack_linear_layers
from pagedllm_core.model.quantization import QuantizationTarget
from pagedllm_core.registry import PluginKind, Registry

logger = logging.getLogger(__name__)


def prepacks_linear_weights(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the model's linear layers run from oneDNN-prepacked weights: on a CPU, in float32, or
    in bfloat16 where the CPU has native bfloat16 (oneDNN refuses to pack it otherwise)."""
    return device.type == "cpu" and (dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_has_native_bfloat16()))


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


@dataclass
class LoadedRunner:
    """What a worker's start-up gives it: the runner over the model and its KV pool."""

    runner: ModelRunner
    num_kv_blocks: int


def load_model_runner(config: EngineConfig, registry: Registry, info: ModelInfo) -> LoadedRunner:
    """Build and load the model, size and allocate the KV pool, and build the runner over them."""
    device, dtype, hf_config = info.device, info.dtype, info.hf_config
    if device.type == "cpu" and config.num_cpu_threads is not None:
        torch.set_num_threads(config.num_cpu_threads)
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
    loader.load_weights(model, info.source, hf_config)
    model.eval()
    quantization = build_quantization(config, registry, QuantizationTarget(info.source, hf_config, dtype, device))
    if quantization is not None:
        logger.info(
            "quantization %r runs %d linear layers", config.quantization, quantization.process_weights_after_loading(model)
        )
    if prepacks_linear_weights(device, dtype):
        logger.info("prepacked %d linear layers for oneDNN", prepack_linear_layers(model))

    max_model_len = info.max_model_len
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
    runner = ModelRunner(
        model, attention, sampler, kv_cache, config.block_size, info.vocab_size, max_model_len, device
    )
    return LoadedRunner(runner, num_blocks)

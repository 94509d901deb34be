"""Worker start-up: pick the plugins, load the model, size the KV pool, build the runner."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.attention.kv_quant import kv_cache_torch_dtype
from pagedllm_core.config import EngineConfig
from pagedllm_core.distributed.group import TensorParallelGroup
from pagedllm_core.distributed.partition import max_kv_heads_per_rank
from pagedllm_core.errors import ConfigError, UnsupportedConfigError
from pagedllm_core.model import loader
from pagedllm_core.model.layers.linear import prepack_linear_layers
from pagedllm_core.model.model_info import ModelInfo, cpu_has_native_bfloat16
from pagedllm_core.model.native_decode import build_native_decoder
from pagedllm_core.model.quantization import QuantizationTarget
from pagedllm_core.plugin_options import check_unused_options, instantiate
from pagedllm_core.registry import PluginKind, Registry
from pagedllm_core.spec_decode.setup import build_speculator, load_draft_model
from pagedllm_core.worker.cpu_process import configure_cpu_process
from pagedllm_core.worker.cuda_graphs import DecodeGraphs
from pagedllm_core.worker.kv_cache import KVCacheShape, allocate_kv_cache, num_blocks_for_budget
from pagedllm_core.worker.model_runner import ModelRunner

logger = logging.getLogger(__name__)


def attention_spec(config: EngineConfig, info: ModelInfo, tp: TensorParallelGroup | None = None) -> AttentionSpec:
    """The attention this rank's share of the heads needs, with the KV cache in ``config.kv_cache_dtype``
    (``auto``: the model's)."""
    shape = loader.attention_shape(info.hf_config)
    heads = (tp or TensorParallelGroup.single()).attention_heads(shape.num_heads, shape.num_kv_heads)
    return AttentionSpec(
        num_heads=heads.query.size,
        num_kv_heads=heads.key_value.size,
        head_size=shape.head_size,
        scale=shape.scale,
        block_size=config.block_size,
        kv_cache_dtype=kv_cache_torch_dtype(config.kv_cache_dtype, info.dtype),
        device=info.device,
        dtype=info.dtype,
        calculate_kv_scales=config.calculate_kv_scales,
    )


def prepacks_linear_weights(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the model's linear layers run from oneDNN-prepacked weights: on a CPU, in float32, or
    in bfloat16 where the CPU has native bfloat16 (oneDNN refuses to pack it otherwise)."""
    return device.type == "cpu" and (dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_has_native_bfloat16()))


def build_attention(config: EngineConfig, registry: Registry, spec: AttentionSpec):
    """Instantiate the configured attention backend after it confirms it can run ``spec``."""
    if config.attention_backend == "auto":
        return _build_auto_attention(config, registry, spec)
    backend_class = registry.resolve(PluginKind.ATTENTION_BACKEND, config.attention_backend)
    reasons = backend_reasons(backend_class, spec)
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
    return instantiate(PluginKind.ATTENTION_BACKEND, config.attention_backend, backend_class, config, spec)


def _build_auto_attention(config: EngineConfig, registry: Registry, spec: AttentionSpec):
    """The first preferred backend that is installed, can run ``spec`` and starts (a kernel may fail to build)."""
    candidates = registry.auto_candidates(PluginKind.ATTENTION_BACKEND, spec.device.type)
    for name in candidates:
        if _reasons_of(registry, name, spec):
            continue
        backend_class = registry.resolve(PluginKind.ATTENTION_BACKEND, name)
        try:
            backend = instantiate(PluginKind.ATTENTION_BACKEND, name, backend_class, config, spec)
        except ConfigError:
            raise  # bad options: another backend would not take them either
        except Exception as error:
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
        return backend_reasons(registry.resolve(PluginKind.ATTENTION_BACKEND, name), spec)
    except ConfigError as error:
        return [str(error)]


def backend_reasons(backend_class, spec: AttentionSpec) -> list[str]:
    """The backend's own reasons, and whether it can keep the KV cache in ``spec.kv_cache_dtype``."""
    reasons = list(backend_class.unsupported_reasons(spec))
    supported = backend_class.supported_kv_cache_dtypes(spec.model_dtype)
    if spec.kv_cache_dtype not in supported:
        names = ", ".join(str(dtype).removeprefix("torch.") for dtype in supported)
        reasons.append(
            f"kv_cache_dtype {str(spec.kv_cache_dtype).removeprefix('torch.')} is not supported "
            f"(with a {str(spec.model_dtype).removeprefix('torch.')} model it keeps: {names})"
        )
    return reasons


def build_quantization(config: EngineConfig, registry: Registry, target: QuantizationTarget):
    """The configured quantization method, built for ``target``; None for dense weights.

    ``auto`` takes the highest-priority method registered for the checkpoint's format that can run it;
    a checkpoint that only a quantization method can load (its config names one) fails without one.
    Quantized layers are not split over tensor-parallel ranks: with several ranks, ``auto`` loads
    GGUF and dense checkpoints as dense weights and any other quantized checkpoint is refused."""
    if config.quantization == "none":
        check_unused_options(config, PluginKind.QUANTIZER)
        return None
    if config.tensor_parallel_size > 1:
        return _dense_for_tensor_parallel(config, target)
    if config.quantization == "auto":
        checkpoint_format = quantization_format(target)
        reasons_by_method = {}
        for name in registry.auto_candidates(PluginKind.QUANTIZER, checkpoint_format):
            method_class = registry.resolve(PluginKind.QUANTIZER, name)
            reasons = method_class.unsupported_reasons(target)
            if not reasons:
                return instantiate(PluginKind.QUANTIZER, name, method_class, config, target)
            reasons_by_method[name] = reasons
            logger.info("quantization auto: not using %r (%s)", name, "; ".join(reasons))
        if checkpoint_format in ("dense", "gguf"):
            check_unused_options(config, PluginKind.QUANTIZER)
            return None  # both load as dense weights too
        tried = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in reasons_by_method.items())
        raise UnsupportedConfigError(
            f"the checkpoint is quantized as {checkpoint_format!r} and no installed quantization method can run it"
            + (f" ({tried})" if tried else f"; install one (e.g. pip install 'pagedllm[{checkpoint_format}]')")
        )
    method_class = registry.resolve(PluginKind.QUANTIZER, config.quantization)
    reasons = method_class.unsupported_reasons(target)
    if reasons:
        raise UnsupportedConfigError(f"quantization {config.quantization!r} cannot run this model: {'; '.join(reasons)}")
    return instantiate(PluginKind.QUANTIZER, config.quantization, method_class, config, target)


def _dense_for_tensor_parallel(config: EngineConfig, target: QuantizationTarget) -> None:
    checkpoint_format = quantization_format(target)
    if config.quantization == "auto" and checkpoint_format in ("dense", "gguf"):
        if checkpoint_format == "gguf":
            logger.info("tensor_parallel_size=%d: the GGUF file runs from dense weights", config.tensor_parallel_size)
        check_unused_options(config, PluginKind.QUANTIZER)
        return
    method = checkpoint_format if config.quantization == "auto" else config.quantization
    raise UnsupportedConfigError(
        f"quantization {method!r} does not split its layers over tensor_parallel_size={config.tensor_parallel_size} "
        "ranks yet: run it with one rank, or a dense or GGUF checkpoint (loaded as dense weights) with several"
    )


def quantization_format(target: QuantizationTarget) -> str:
    """How the checkpoint stores its weights: ``gguf``, the ``quant_method`` its config names (``awq``,
    ``gptq``, ``fp8``, ``compressed-tensors``, ...), or ``dense``."""
    if target.source.is_gguf:
        return "gguf"
    quantization_config = getattr(target.hf_config, "quantization_config", None)
    if quantization_config is None:
        return "dense"
    if not isinstance(quantization_config, dict):
        quantization_config = quantization_config.to_dict()
    return str(quantization_config.get("quant_method", "unknown")).lower()


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


def load_model(config: EngineConfig, registry: Registry, info: ModelInfo, tp: TensorParallelGroup | None = None):
    """Build ``info``'s model (this rank's shard of it under tensor parallelism) with its attention backend
    and quantization, load its weights; returns (model, attention)."""
    device, dtype, hf_config = info.device, info.dtype, info.hf_config
    tp = tp or TensorParallelGroup.single()
    spec = attention_spec(config, info, tp)
    attention = build_attention(config, registry, spec)
    quantization = build_quantization(config, registry, QuantizationTarget(info.source, hf_config, dtype, device))
    model = loader.build_model(hf_config, attention, dtype, device, quantization, tp)
    loader.load_weights(model, info.source, hf_config)
    model.eval()
    if quantization is not None:
        logger.info(
            "quantization %r runs %d linear layers", config.quantization, quantization.process_weights_after_loading(model)
        )
    if prepacks_linear_weights(device, dtype):
        logger.info("prepacked %d linear layers for oneDNN", prepack_linear_layers(model))
    return model, attention


def load_model_runner(
    config: EngineConfig, registry: Registry, info: ModelInfo, tp: TensorParallelGroup | None = None
) -> LoadedRunner:
    """Build and load the model (this rank's shard), size and allocate the KV pool, and build the runner over them.

    Every tensor-parallel rank sizes its pool for the most KV heads any rank holds, so that all pools
    have the same number of blocks: the engine's one block manager hands out block ids for all of them.
    """
    device, hf_config = info.device, info.hf_config
    tp = tp or TensorParallelGroup.single()
    if device.type == "cpu":
        configure_cpu_process(config.num_cpu_threads)
    shape = loader.attention_shape(hf_config)
    spec = attention_spec(config, info, tp)
    model, attention = load_model(config, registry, info, tp)
    lora_manager = None
    if config.enable_lora:
        lora_manager = registry.resolve(PluginKind.LORA_MANAGER, config.lora_manager)(model, config, device, info.dtype)
    draft = load_draft_model(config, registry, info)

    max_model_len = info.max_model_len
    cache_shape = KVCacheShape(shape.num_layers, spec.num_kv_heads, shape.head_size, spec.kv_cache_dtype)
    sizing_shape = KVCacheShape(
        shape.num_layers,
        max_kv_heads_per_rank(shape.num_heads, shape.num_kv_heads, tp.world_size),
        shape.head_size,
        spec.kv_cache_dtype,
    )
    num_blocks = num_blocks_for_budget(
        config, sizing_shape, available_device_bytes(config, device), max_model_len, draft and draft.cache_shape
    )
    blocks_per_sequence = -(-max_model_len // config.block_size)
    if num_blocks < blocks_per_sequence:
        raise ConfigError(
            f"the KV cache holds {num_blocks} blocks of {config.block_size} tokens but one sequence of "
            f"max_model_len={max_model_len} needs {blocks_per_sequence}; raise kv_cache_memory "
            f"(each block takes {cache_shape.bytes_per_block(config.block_size)} bytes) or lower max_model_len"
        )
    kv_cache = allocate_kv_cache(num_blocks, config.block_size, cache_shape, device, type(attention))
    logger.info(
        "KV cache: %d blocks of %d tokens (%.1f MiB, %d tokens)",
        num_blocks, config.block_size, kv_cache.numel() * kv_cache.element_size() / 2**20, num_blocks * config.block_size,
    )
    sampler_class = registry.resolve(PluginKind.SAMPLER, config.sampler)
    sampler = instantiate(PluginKind.SAMPLER, config.sampler, sampler_class, config, config)
    runner = ModelRunner(
        model, attention, sampler, kv_cache, config.block_size, info.vocab_size, max_model_len, device, lora_manager
    )
    if device.type == "cuda" and not config.enforce_eager:
        if tp.world_size > 1:
            logger.info("decode steps run eagerly: CUDA graphs are not captured under tensor parallelism")
        elif lora_manager is not None:
            # A captured graph replays fixed LoRA slots; the step's adapters change from step to step.
            logger.info("decode steps run eagerly: LoRA adapters are enabled")
        elif attention.supports_cuda_graphs:
            runner.decode_graphs = DecodeGraphs(
                model, attention, runner.kv_caches, config.max_num_seqs, blocks_per_sequence, max_model_len, device
            )
            runner.decode_graphs.capture()
        else:
            logger.info("decode steps run eagerly: %s does not support CUDA graphs", type(attention).__name__)
    runner.native_decoder = build_native_decoder(
        model, attention, device, config.enforce_eager, lora_enabled=lora_manager is not None
    )
    runner.speculator = build_speculator(config, runner, draft, num_blocks)
    return LoadedRunner(runner, num_blocks)

"""What the engine and its workers both resolve from the config before anything is loaded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.cpu_flags import cpu_flags
from pagedllm_core.errors import ConfigError
from pagedllm_core.model import loader
from pagedllm_core.model.source import ModelSource

logger = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    """The checkpoint, its config, and the dtype, device and context the model runs with."""

    source: ModelSource
    hf_config: Any
    dtype: torch.dtype
    device: torch.device
    max_model_len: int

    @property
    def vocab_size(self) -> int:
        return self.hf_config.vocab_size


def resolve_model_info(config: EngineConfig) -> ModelInfo:
    device = resolve_device(config.device)
    source = loader.resolve_model_source(config)
    hf_config = loader.load_hf_config(source)
    quantized = config.quantization != "none" and (
        source.is_gguf or getattr(hf_config, "quantization_config", None) is not None
    )
    dtype = fit_dtype_to_device(config, loader.resolve_dtype(config.dtype, hf_config, source), device, quantized)
    max_model_len = resolve_max_model_len(config, loader.context_length(hf_config))
    return ModelInfo(source, hf_config, dtype, device, max_model_len)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was requested but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX-512 BF16); without it torch
    emulates bfloat16 matmuls, which is many times slower than float32."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_has_native_float16() -> bool:
    """Whether this CPU multiplies float16 in hardware (AMX-FP16 or AVX-512 FP16); CPUs with native
    bfloat16 but not these emulate float16."""
    return bool({"amx_fp16", "avx512_fp16"} & cpu_flags())


def fit_dtype_to_device(config: EngineConfig, dtype: torch.dtype, device: torch.device, quantized: bool) -> torch.dtype:
    """With ``dtype="auto"`` on a CPU, run in float32 unless the CPU multiplies the half dtype natively.

    A quantized checkpoint (GGUF blocks, AWQ, W8A8) runs in float32 on every CPU: the quantization plugins'
    CPU kernels take float32 activations, as llama.cpp's do, and in a half dtype ``auto`` would turn them off.
    """
    if config.dtype != "auto" or device.type != "cpu" or dtype == torch.float32:
        return dtype
    native = cpu_has_native_bfloat16() if dtype == torch.bfloat16 else cpu_has_native_float16()
    if native and not quantized:
        return dtype
    if quantized:
        reason = "its quantized layers' CPU kernels compute in float32"
    else:
        reason = f"this CPU has no native {dtype} matmuls"
    logger.info("dtype auto: %s, so the model runs in float32", reason)
    return torch.float32


def resolve_max_model_len(config: EngineConfig, model_context: int) -> int:
    if config.max_model_len is None:
        return model_context
    if config.max_model_len > model_context:
        raise ConfigError(
            f"max_model_len ({config.max_model_len}) exceeds the model's context length ({model_context})"
        )
    return config.max_model_len

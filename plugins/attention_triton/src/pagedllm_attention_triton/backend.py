"""The ``triton`` attention backend: Triton kernels over the core's paged KV cache layout."""

from __future__ import annotations

import importlib.util

import torch
from pydantic import Field

from pagedllm_attention_triton.interpreter import INTERPRET_ENV, interpreter_enabled
from pagedllm_core.attention.backend import AttentionBackend, AttentionSpec
from pagedllm_core.attention.kv_quant import FP8_DTYPES
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.plugin_options import PluginOptions

SUPPORTED_HEAD_SIZES = (64, 80, 96, 128)
SUPPORTED_KV_CACHE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, *FP8_DTYPES)

class TritonOptions(PluginOptions):
    """``plugin_options={"attention_backend": {...}}`` of the triton backend."""

    decode_programs_per_sm: int = Field(
        2,
        ge=1,
        description="On a GPU, decode contexts are split into partitions until a step has this many programs per "
        "streaming multiprocessor (more: more parallelism for few long sequences, more reduce work).",
    )


class TritonAttentionBackend(AttentionBackend):
    """Writes new K/V with a Triton kernel, then runs decode (optionally split-K) or prefill attention.

    Decode-only steps (``max_query_len == 1``) take the decode kernel, split across partitions of
    the context when there are too few (sequence, KV head) pairs to fill the GPU; any other step,
    including a mix of prefill and decode rows, takes the prefill kernel.
    """

    @classmethod
    def unsupported_reasons(cls, spec: AttentionSpec) -> list[str]:
        reasons = []
        if importlib.util.find_spec("triton") is None:
            reasons.append("triton is not installed (pip install triton)")
        if spec.device.type == "cpu" and not interpreter_enabled():
            reasons.append(f"device cpu needs {INTERPRET_ENV}=1 (Triton's interpreter: correct but slow)")
        elif spec.device.type not in ("cpu", "cuda"):
            reasons.append(f"device {spec.device.type} unsupported (cuda, or cpu with {INTERPRET_ENV}=1)")
        if spec.head_size not in SUPPORTED_HEAD_SIZES:
            allowed = ", ".join(map(str, SUPPORTED_HEAD_SIZES))
            reasons.append(f"head size {spec.head_size} unsupported ({allowed} are)")
        if spec.kv_cache_dtype not in SUPPORTED_KV_CACHE_DTYPES:
            allowed = ", ".join(str(dtype) for dtype in SUPPORTED_KV_CACHE_DTYPES)
            reasons.append(f"KV cache dtype {spec.kv_cache_dtype} unsupported ({allowed} are)")
        elif (
            spec.kv_cache_dtype == torch.bfloat16 and spec.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        ):
            reasons.append("KV cache dtype torch.bfloat16 needs a GPU with bfloat16 support (compute capability 8.0+)")
        if spec.num_heads % spec.num_kv_heads:
            reasons.append(f"{spec.num_heads} query heads do not divide into {spec.num_kv_heads} KV head groups")
        if spec.kv_cache_dtype == torch.float8_e4m3fn and spec.device.type == "cuda" and (
            torch.cuda.get_device_capability(spec.device) < (8, 9)
        ):
            reasons.append("KV cache dtype fp8 E4M3 needs a GPU of compute capability 8.9+ (fp8_e5m2 does not)")
        return reasons

    @classmethod
    def supported_kv_cache_dtypes(cls, model_dtype: torch.dtype) -> tuple[torch.dtype, ...]:
        return (model_dtype, *FP8_DTYPES)

    options_class = TritonOptions

    def __init__(self, spec: AttentionSpec, options: TritonOptions = TritonOptions()):
        super().__init__(spec)
        # Imported here rather than at module level so that unsupported_reasons can run (and say
        # so) where triton is missing.
        from pagedllm_attention_triton.cache_write import write_kv_cache
        from pagedllm_attention_triton.decode import paged_decode, plan_decode_split
        from pagedllm_attention_triton.prefill import paged_prefill

        self._write_kv_cache = write_kv_cache
        self._paged_decode = paged_decode
        self._plan_decode_split = plan_decode_split
        self._paged_prefill = paged_prefill
        if spec.device.type == "cuda":
            num_sms = torch.cuda.get_device_properties(spec.device).multi_processor_count
            self._num_target_decode_programs = options.decode_programs_per_sm * num_sms
        else:
            # The interpreter runs programs one after another: splitting would only add work.
            self._num_target_decode_programs = 1

    def prepare(self, metadata: AttentionMetadata) -> None:
        if metadata.max_query_len == 1:
            metadata.backend_data = self._plan_decode_split(
                metadata.num_seqs, self.spec.num_kv_heads, metadata.max_seq_len, self._num_target_decode_programs
            )

    def forward(self, query, key, value, kv_cache, metadata, kv_scales=None):
        self._write_kv_cache(key, value, kv_cache, metadata.slot_mapping, kv_scales)
        if metadata.max_query_len == 1:
            return self._paged_decode(query, kv_cache, metadata, self.spec.scale, metadata.backend_data, kv_scales)
        return self._paged_prefill(query, kv_cache, metadata, self.spec.scale, kv_scales)

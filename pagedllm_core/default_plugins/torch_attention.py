"""The ``torch`` attention backend: the reference op, runs anywhere torch runs."""

from __future__ import annotations

import torch

from pagedllm_core.attention.backend import AttentionBackend, AttentionSpec
from pagedllm_core.attention.kv_quant import FP8_DTYPES
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.attention.reference import build_padded_layout, paged_attention, write_kv_cache
from pagedllm_core.hookspecs import hookimpl


class TorchAttentionBackend(AttentionBackend):
    """Gathers each sequence's blocks into a padded batch and calls ``scaled_dot_product_attention``."""

    @classmethod
    def unsupported_reasons(cls, spec: AttentionSpec) -> list[str]:
        if spec.kv_cache_dtype not in (torch.float32, torch.float16, torch.bfloat16, *FP8_DTYPES):
            return [f"KV cache dtype {spec.kv_cache_dtype} unsupported (float32, float16, bfloat16, fp8 are)"]
        return []

    @classmethod
    def supported_kv_cache_dtypes(cls, model_dtype: torch.dtype) -> tuple[torch.dtype, ...]:
        return (model_dtype, *FP8_DTYPES)

    def prepare(self, metadata: AttentionMetadata) -> None:
        metadata.backend_data = build_padded_layout(metadata, self.spec.block_size)

    def forward(self, query, key, value, kv_cache, metadata, kv_scales=None):
        write_kv_cache(key, value, kv_cache, metadata.slot_mapping, kv_scales)
        return paged_attention(query, kv_cache, metadata, self.spec.scale, metadata.backend_data, kv_scales)


@hookimpl
def register_attention_backends(register):
    register(
        "torch",
        TorchAttentionBackend,
        "pure PyTorch paged attention (reference, any device)",
        auto_priority={"cpu": 0, "cuda": 0},
    )

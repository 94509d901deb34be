"""The ``torch`` attention backend: the reference op, runs anywhere torch runs."""

from __future__ import annotations

import torch

from pagedllm_core.attention.backend import AttentionBackend, AttentionSpec
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.attention.reference import build_padded_layout, paged_attention, write_kv_cache
from pagedllm_core.hookspecs import hookimpl


class TorchAttentionBackend(AttentionBackend):
    """Gathers each sequence's blocks into a padded batch and calls ``scaled_dot_product_attention``."""

    @classmethod
    def unsupported_reasons(cls, spec: AttentionSpec) -> list[str]:
        if spec.kv_cache_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            return [f"KV cache dtype {spec.kv_cache_dtype} unsupported (float32, float16, bfloat16 are)"]
        return []

    def prepare(self, metadata: AttentionMetadata) -> None:
        metadata.backend_data = build_padded_layout(metadata, self.spec.block_size)

    def forward(self, query, key, value, kv_cache, metadata):
        write_kv_cache(key, value, kv_cache, metadata.slot_mapping)
        return paged_attention(query, kv_cache, metadata, self.spec.scale, metadata.backend_data)


@hookimpl
def register_attention_backends(register):
    register(
        "torch",
        TorchAttentionBackend,
        "pure PyTorch paged attention (reference, any device)",
        auto_priority={"cpu": 0, "cuda": 0},
    )

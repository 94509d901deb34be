"""The model side of paged attention: one layer's call into the engine's attention backend."""

from __future__ import annotations

import torch
from torch import nn

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.kv_quant import is_fp8, scale_from_amax
from pagedllm_core.attention.metadata import AttentionMetadata


class PagedAttention(nn.Module):
    """Hands one layer's rotated q/k/v to the backend together with that layer's KV cache.

    One backend instance serves every layer; the layer index picks this layer's KV cache. With an
    fp8 cache the layer owns its ``k_scale``/``v_scale`` (1.0, a checkpoint's ``self_attn.k_scale``,
    or computed from the first step's keys and values with ``calculate_kv_scales``).
    """

    def __init__(self, backend: AttentionBackend, layer_index: int, num_heads: int, num_kv_heads: int, head_size: int):
        super().__init__()
        self.backend = backend
        self.layer_index = layer_index
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_size = head_size
        self.register_buffer("k_scale", torch.ones((), dtype=torch.float32))
        self.register_buffer("v_scale", torch.ones((), dtype=torch.float32))
        self.quantizes_kv_cache = is_fp8(backend.spec.kv_cache_dtype)
        self.calculate_kv_scales = self.quantizes_kv_cache and backend.spec.calculate_kv_scales

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_caches: list[torch.Tensor],
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        # query: [num_tokens, num_heads * head_size]; key, value: [num_tokens, num_kv_heads * head_size]
        num_tokens = query.shape[0]
        scales = {}
        if self.quantizes_kv_cache:
            if self.calculate_kv_scales and num_tokens:
                self.k_scale.copy_(scale_from_amax(key, self.backend.spec.kv_cache_dtype))
                self.v_scale.copy_(scale_from_amax(value, self.backend.spec.kv_cache_dtype))
                self.calculate_kv_scales = False
            scales["kv_scales"] = (self.k_scale, self.v_scale)
        output = self.backend.forward(
            query.view(num_tokens, self.num_heads, self.head_size),
            key.view(num_tokens, self.num_kv_heads, self.head_size),
            value.view(num_tokens, self.num_kv_heads, self.head_size),
            kv_caches[self.layer_index],
            metadata,
            **scales,
        )
        # output: [num_tokens, num_heads, head_size] -> [num_tokens, num_heads * head_size]
        return output.reshape(num_tokens, self.num_heads * self.head_size)

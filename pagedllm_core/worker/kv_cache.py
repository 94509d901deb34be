"""Sizing and allocating the one preallocated KV cache pool."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pagedllm_core.config import EngineConfig


@dataclass(frozen=True)
class KVCacheShape:
    """The per-token KV footprint of a model."""

    num_layers: int
    num_kv_heads: int
    head_size: int
    dtype: torch.dtype

    def bytes_per_block(self, block_size: int) -> int:
        element_size = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.num_layers * block_size * self.num_kv_heads * self.head_size * element_size


def num_blocks_for_budget(
    config: EngineConfig,
    shape: KVCacheShape,
    available_device_bytes: int | None,
    max_model_len: int,
    draft_shape: KVCacheShape | None = None,
) -> int:
    """Blocks that fit the configured budget (and, on CUDA, the memory left after profiling), but no
    more than ``max_num_seqs`` sequences of ``max_model_len`` tokens could ever hold. A speculative
    draft model's cache (``draft_shape``) has a block for each of the target's and shares the budget."""
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    budget = int(config.kv_cache_memory)
    if available_device_bytes is not None:
        budget = min(budget, available_device_bytes)
    max_useful_blocks = config.max_num_seqs * -(-max_model_len // config.block_size)
    bytes_per_block = shape.bytes_per_block(config.block_size)
    if draft_shape is not None:
        bytes_per_block += draft_shape.bytes_per_block(config.block_size)
    return min(budget // bytes_per_block, max_useful_blocks)


def allocate_kv_cache(
    num_blocks: int, block_size: int, shape: KVCacheShape, device: torch.device, backend: type | None = None
) -> torch.Tensor:
    """``[num_layers, *layer shape]``, the layer shape in ``backend``'s layout (the default layout
    ``[2, num_blocks, block_size, num_kv_heads, head_size]`` without one); layer ``i`` uses ``cache[i]``."""
    from pagedllm_core.attention.backend import AttentionBackend

    layer_shape = (backend or AttentionBackend).kv_cache_shape(num_blocks, block_size, shape.num_kv_heads, shape.head_size)
    return torch.zeros(shape.num_layers, *layer_shape, dtype=shape.dtype, device=device)

"""A model loaded through our loader onto the torch backend, with a KV cache to run steps on."""

import torch

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend
from pagedllm_core.worker.kv_cache import KVCacheShape, allocate_kv_cache
from pagedllm_core.model import loader
from pagedllm_core.testing import SequenceChunk, run_model_step

CPU = torch.device("cpu")


class PagedModel:
    """The loader's steps in the engine's order, on the CPU."""

    def __init__(self, config: EngineConfig, block_size: int, num_blocks: int = 64):
        self.source = loader.resolve_model_source(config)
        self.hf_config = loader.load_hf_config(self.source)
        shape = loader.attention_shape(self.hf_config)
        dtype = loader.resolve_dtype(config.dtype, self.hf_config, self.source)
        spec = AttentionSpec(shape.num_heads, shape.num_kv_heads, shape.head_size, shape.scale, block_size, dtype, CPU)
        self.block_size = block_size
        self.backend = TorchAttentionBackend(spec)
        self.model = loader.build_model(self.hf_config, self.backend, dtype, CPU)
        loader.load_weights(self.model, self.source, self.hf_config)
        cache_shape = KVCacheShape(shape.num_layers, shape.num_kv_heads, shape.head_size, dtype)
        self.kv_caches = allocate_kv_cache(num_blocks, block_size, cache_shape, CPU)

    def step(self, chunks: list[SequenceChunk]) -> torch.Tensor:
        """Float32 logits ``[num_new_tokens, vocab]`` of one step."""
        return run_model_step(self.model, self.backend, self.kv_caches, chunks, self.block_size)

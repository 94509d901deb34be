import pytest
import torch
from transformers import AutoModelForCausalLM

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend
from pagedllm_core.model import loader
from pagedllm_core.testing import allocate_kv_caches


class PagedModel:
    """Our model loaded from a directory with the torch backend, and a KV cache for it."""

    def __init__(self, directory, block_size: int, num_blocks: int = 64):
        source = loader.resolve_model_source(EngineConfig(model=str(directory)))
        hf_config = loader.load_hf_config(source)
        shape = loader.attention_shape(hf_config)
        spec = AttentionSpec(
            shape.num_heads, shape.num_kv_heads, shape.head_size, shape.scale, block_size, torch.float32,
            torch.device("cpu"),
        )
        self.block_size = block_size
        self.backend = TorchAttentionBackend(spec)
        self.model = loader.build_model(hf_config, self.backend, torch.float32, "cpu")
        loader.load_weights(self.model, source, hf_config)
        self.kv_caches = allocate_kv_caches(
            shape.num_layers, num_blocks, block_size, shape.num_kv_heads, shape.head_size, torch.float32
        )


@pytest.fixture
def paged_model(tiny_model_dir):
    """``paged_model(architecture, block_size, **config_overrides)`` -> a fresh :class:`PagedModel`."""

    def make(architecture: str, block_size: int, **config_overrides) -> PagedModel:
        return PagedModel(tiny_model_dir(architecture, **config_overrides), block_size)

    return make


@pytest.fixture(scope="session")
def transformers_logits(tiny_model_dir):
    """``transformers_logits(architecture, token_ids, **config_overrides)`` -> float32 ``[len, vocab]``."""
    models = {}

    def run(architecture: str, token_ids: list[int], **config_overrides) -> torch.Tensor:
        directory = tiny_model_dir(architecture, **config_overrides)
        if directory not in models:
            models[directory] = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        with torch.no_grad():
            return models[directory](torch.tensor([token_ids])).logits[0]

    return run

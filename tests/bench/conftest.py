"""A tiny model for the benchmark tests: its prompts and outputs must fit its 512-token context."""

import pytest

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.llm_engine import LLMEngine


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_dir):
    return tiny_model_dir("LlamaForCausalLM")


@pytest.fixture
def engine(tiny_llama):
    """A fresh engine whose pool is small enough (24 blocks of 4 tokens) that W1-like load preempts."""
    return LLMEngine(EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=24, max_model_len=64))

import pytest
import torch
from transformers import AutoModelForCausalLM

from pagedllm_core.config import EngineConfig
from pagedllm_core.model.layers import cpu_kernels
from tests.model.paged_model import PagedModel


@pytest.fixture(scope="session")
def kernels():
    """The decoder layers' compiled CPU kernels (:mod:`pagedllm_core.model.layers.cpu_kernels`)."""
    loaded = cpu_kernels.load_kernels()
    if loaded is None:
        pytest.skip("no C++ compiler or ninja here")
    return loaded


@pytest.fixture
def paged_model(tiny_model_dir):
    """``paged_model(architecture, block_size, **config_overrides)`` -> a fresh :class:`PagedModel`."""

    def make(architecture: str, block_size: int, **config_overrides) -> PagedModel:
        return PagedModel(EngineConfig(model=str(tiny_model_dir(architecture, **config_overrides))), block_size)

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

import pytest
import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.default_sampler import DefaultSampler
from pagedllm_core.sampling.pipeline import sample_tokens
from pagedllm_core.testing import build_sampling_rows
from pagedllm_core.worker.sampling_metadata import build_sampling_metadata


@pytest.fixture
def sample():
    """``sample(logits, params, outputs=None, prompts=None, generators=None, seed=0)`` -> SamplerOutput."""

    def run(logits, params, outputs=None, prompts=None, generators=None, seed=0):
        vocab_size = logits.shape[-1]
        batch, rows = build_sampling_rows(params, vocab_size, prompts, outputs, [vocab_size - 1], generators)
        metadata = build_sampling_metadata(batch, rows, torch.device("cpu"))
        return sample_tokens(DefaultSampler(EngineConfig.build(seed=seed)), logits.clone(), metadata)

    return run

import pytest
import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.default_sampler import DefaultSampler
from pagedllm_core.engine.request import Request
from pagedllm_core.engine.sampling_inputs import SamplingRow, build_sampling_metadata


@pytest.fixture
def sample():
    """``sample(logits, params, outputs=None, prompts=None, generators=None, seed=0)`` -> SamplerOutput."""

    def run(logits, params, outputs=None, prompts=None, generators=None, seed=0):
        vocab_size = logits.shape[-1]
        rows = []
        for i, row_params in enumerate(params):
            prompt = prompts[i] if prompts else [0]
            request = Request(str(i), prompt, row_params, 1000, frozenset({vocab_size - 1}))
            request.token_ids.extend(outputs[i] if outputs else [])
            rows.append(SamplingRow(request, (generators or {}).get(i)))
        metadata = build_sampling_metadata(rows, vocab_size, torch.device("cpu"))
        return DefaultSampler(EngineConfig.build(seed=seed)).sample(logits.clone(), metadata)

    return run

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.default_sampler import DefaultSampler, apply_top_k_top_p
from pagedllm_core.sampling.sampler import SamplingMetadata
from pagedllm_core.sampling_params import SamplingParams

VOCAB = 8


def sample(logits, params, generators=None, seed=0):
    sampler = DefaultSampler(EngineConfig.build(seed=seed))
    metadata = SamplingMetadata.from_params(params, generators or {}, VOCAB, torch.device("cpu"))
    return sampler.sample(logits, metadata)


def test_greedy_rows_take_argmax_even_next_to_random_rows():
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(temperature=0), SamplingParams(temperature=1.0), SamplingParams(temperature=0), SamplingParams(top_k=1)]
    tokens = sample(logits, params)
    assert tokens[0] == logits[0].argmax() and tokens[2] == logits[2].argmax() and tokens[3] == logits[3].argmax()


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0]]) + 1e-9).repeat(2, 1)
    filtered = apply_top_k_top_p(logits, top_k=torch.tensor([2, VOCAB]), top_p=torch.tensor([1.0, 0.8]))
    assert torch.isfinite(filtered[0]).tolist() == [True, True] + [False] * 6
    # Nucleus 0.8: 0.4 + 0.3 + 0.2 = 0.9 is the smallest prefix reaching 0.8.
    assert torch.isfinite(filtered[1]).tolist() == [True, True, True] + [False] * 5


def test_samples_come_only_from_top_k():
    logits = torch.zeros(2000, VOCAB)
    logits[:, :3] = 1.0
    logits[:, 5] = 0.5
    tokens = sample(logits, [SamplingParams(temperature=1.0, top_k=3)] * 2000)
    assert set(tokens.tolist()) == {0, 1, 2}


def test_seeded_request_repeats_whatever_shares_its_batch():
    torch.manual_seed(0)
    logits = torch.randn(3, VOCAB)
    seeded = SamplingParams(temperature=1.0, seed=1234)

    def seeded_draws(other_rows: int, engine_seed: int) -> list[int]:
        batch = torch.cat([torch.randn(other_rows, VOCAB), logits[:1]])
        params = [SamplingParams(temperature=1.0)] * other_rows + [seeded]
        generator = torch.Generator().manual_seed(seeded.seed)
        return [int(sample(batch, params, {other_rows: generator}, seed=engine_seed)[-1]) for _ in range(6)]

    assert seeded_draws(0, engine_seed=0) == seeded_draws(5, engine_seed=7)

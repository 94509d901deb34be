"""Greedy, top-k/top-p/min-p filters and temperature: allowed sets and frequencies."""

import pytest
import torch

from pagedllm_core.sampling.logits_processors import apply_min_p, apply_top_k_top_p
from pagedllm_core.sampling_params import SamplingParams

VOCAB = 8
NUM_DRAWS = 20000


def chi_square(observed: torch.Tensor, expected_probs: torch.Tensor) -> float:
    expected = expected_probs * observed.sum()
    keep = expected > 0
    return float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())


# 99.9% quantile of chi-square with up to 7 degrees of freedom is 24.3: a correct sampler fails
# this check about once in a thousand runs, a wrong distribution fails it every time.
CHI_SQUARE_LIMIT = 24.3

BASE_LOGITS = torch.log(torch.tensor([0.30, 0.20, 0.15, 0.12, 0.10, 0.07, 0.04, 0.02]))


def draw(sample, params: SamplingParams) -> torch.Tensor:
    logits = BASE_LOGITS.repeat(NUM_DRAWS, 1)
    tokens = sample(logits, [params] * NUM_DRAWS).token_ids
    return torch.bincount(tokens, minlength=VOCAB).float()


def test_greedy_rows_take_argmax_next_to_random_rows(sample):
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(temperature=0), SamplingParams(), SamplingParams(temperature=0), SamplingParams(top_k=1)]
    tokens = sample(logits, params).token_ids
    assert [tokens[i] for i in (0, 2, 3)] == [logits[i].argmax() for i in (0, 2, 3)]


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_temperature_samples_softmax_of_scaled_logits(sample, temperature):
    observed = draw(sample, SamplingParams(temperature=temperature))
    expected = (BASE_LOGITS / temperature).softmax(-1)
    assert chi_square(observed, expected) < CHI_SQUARE_LIMIT


def test_top_k_samples_renormalized_top_k(sample):
    observed = draw(sample, SamplingParams(top_k=3))
    assert observed[3:].sum() == 0
    expected = torch.zeros(VOCAB)
    expected[:3] = BASE_LOGITS[:3].softmax(-1)
    assert chi_square(observed, expected) < CHI_SQUARE_LIMIT


def test_top_p_samples_the_smallest_nucleus(sample):
    # 0.30 + 0.20 + 0.15 = 0.65 >= 0.6: the nucleus is the first three tokens.
    observed = draw(sample, SamplingParams(top_p=0.6))
    assert observed[3:].sum() == 0
    expected = torch.zeros(VOCAB)
    expected[:3] = BASE_LOGITS[:3].softmax(-1)
    assert chi_square(observed, expected) < CHI_SQUARE_LIMIT


def test_min_p_drops_tokens_below_fraction_of_the_best(sample):
    # min_p 0.35 of 0.30 = 0.105: tokens with probability >= 0.105 stay.
    observed = draw(sample, SamplingParams(min_p=0.35))
    assert observed[4:].sum() == 0
    expected = torch.zeros(VOCAB)
    expected[:4] = BASE_LOGITS[:4].softmax(-1)
    assert chi_square(observed, expected) < CHI_SQUARE_LIMIT


def test_filters_against_their_definitions():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0]]) + 1e-9).repeat(2, 1)
    filtered = apply_top_k_top_p(logits, top_k=torch.tensor([2, VOCAB]), top_p=torch.tensor([1.0, 0.8]))
    assert torch.isfinite(filtered[0]).tolist() == [True, True] + [False] * 6
    assert torch.isfinite(filtered[1]).tolist() == [True, True, True] + [False] * 5
    probs = apply_min_p(logits.softmax(-1), torch.tensor([0.45, 0.0]))
    assert (probs[0] > 0).tolist() == [True, True, True] + [False] * 5
    assert (probs[1] > 0).sum() == 8


def test_seeded_row_repeats_whatever_shares_its_batch(sample):
    logits = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(0))
    seeded = SamplingParams(seed=1234)

    def draws(num_other_rows: int, engine_seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(1234)
        batch = torch.cat([torch.randn(num_other_rows, VOCAB), logits])
        params = [SamplingParams()] * num_other_rows + [seeded]
        return [
            int(sample(batch, params, generators={num_other_rows: generator}, seed=engine_seed).token_ids[-1])
            for _ in range(8)
        ]

    assert draws(0, engine_seed=0) == draws(5, engine_seed=7)

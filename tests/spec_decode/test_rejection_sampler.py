"""The rejection sampler keeps the target distribution; greedy verification keeps the target's argmax."""

import pytest
import torch

from pagedllm_core.spec_decode.rejection_sampler import rejection_sample, verify_greedy

VOCAB_SIZE = 5
NUM_TRIALS = 20000
# Chi-square critical value for 4 degrees of freedom at significance 0.001.
CHI_SQUARE_CRITICAL = 18.47


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def distributions(seed: int, num_rows: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(num_rows, VOCAB_SIZE, generator=generator) * 1.5).softmax(dim=-1).double()


def emitted_counts(target: torch.Tensor, propose, accept_all: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of the first emitted token, and of the second among trials that accepted the first draft."""
    generator = torch.Generator().manual_seed(1234)
    first, second = torch.zeros(VOCAB_SIZE), torch.zeros(VOCAB_SIZE)
    for _ in range(NUM_TRIALS):
        drafts, draft_probs = propose(generator)
        run = [*drafts, 0] if accept_all else rejection_sample(target, drafts, draft_probs, generator)
        first[run[0]] += 1
        if len(run) > 1:  # the first draft was accepted
            second[run[1]] += 1
    return first, second


def point_mass_proposer(draft_token_ids):
    return lambda generator: (list(draft_token_ids), None)


def sampled_proposer(draft_probs: torch.Tensor):
    def propose(generator):
        drafts = [int(torch.multinomial(row, 1, generator=generator)) for row in draft_probs]
        return drafts, draft_probs

    return propose


@pytest.mark.parametrize("proposer", ["point_mass", "sampled"])
def test_speculative_sampling_keeps_the_target_distribution(proposer):
    target = distributions(0, 3)
    if proposer == "point_mass":
        propose = point_mass_proposer([int(target[0].argmax()), 3])
    else:
        propose = sampled_proposer(distributions(1, 2))
    first, second = emitted_counts(target, propose)
    assert chi_square(first, target[0]) < CHI_SQUARE_CRITICAL
    assert second.sum() > 1000
    assert chi_square(second, target[1]) < CHI_SQUARE_CRITICAL


def test_the_chi_square_check_rejects_accepting_every_draft():
    target = distributions(0, 3)
    first, _ = emitted_counts(target, sampled_proposer(distributions(1, 2)), accept_all=True)
    assert chi_square(first, target[0]) > CHI_SQUARE_CRITICAL


def test_a_seeded_generator_reproduces_the_run():
    target, draft_probs = distributions(2, 5), distributions(3, 4)
    runs = [
        rejection_sample(target, [0, 1, 2, 3], draft_probs, torch.Generator().manual_seed(7)) for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_a_draft_the_target_cannot_produce_is_always_rejected():
    target = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    for seed in range(20):
        assert rejection_sample(target, [2], None, torch.Generator().manual_seed(seed)) == [1]


@pytest.mark.parametrize(
    ("target", "drafts", "expected"),
    [
        ([5, 6, 7, 8], [5, 6, 7], [5, 6, 7, 8]),  # all accepted, plus the bonus token
        ([5, 9, 7, 8], [5, 6, 7], [5, 9]),  # the first mismatch ends the run with the target's token
        ([4, 6, 7, 8], [5, 6, 7], [4]),
    ],
)
def test_greedy_verification_keeps_the_longest_matching_prefix(target, drafts, expected):
    assert verify_greedy(target, drafts) == expected

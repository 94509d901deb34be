"""Constraint masks in the batched sampler: packing, greedy and random rows, unconstrained batch mates."""

from __future__ import annotations

import pytest
import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.default_sampler import DefaultSampler
from pagedllm_core.sampling.pipeline import sample_tokens
from pagedllm_core.testing import build_sampling_rows
from pagedllm_core.worker.sampling_metadata import build_sampling_metadata
from pagedllm_core.sampling.constraints import ConstraintState, pack_token_ids, unpack_token_bitmask
from pagedllm_core.sampling_params import SamplingParams

VOCAB = 37  # not a multiple of 8, so the packed mask has padding bits


class FixedTokens(ConstraintState):
    """A constraint that always allows the same tokens."""

    def __init__(self, token_ids: list[int]):
        self.token_ids = token_ids

    def allowed_token_bitmask(self) -> torch.Tensor:
        return pack_token_ids(torch.tensor(self.token_ids), VOCAB)

    def accept_token(self, token_id: int) -> bool:
        return token_id in self.token_ids

    def is_complete(self) -> bool:
        return False

    def copy(self) -> FixedTokens:
        return FixedTokens(list(self.token_ids))


def rows_for(params: list[SamplingParams], constraints: list[ConstraintState | None]):
    bitmasks = [None if c is None else c.allowed_token_bitmask().numpy().tobytes() for c in constraints]
    return build_sampling_rows(params, VOCAB, stop_token_ids=[VOCAB - 1], allowed_token_bitmasks=bitmasks)


def sample(logits, batch_and_rows, seed=0):
    metadata = build_sampling_metadata(*batch_and_rows, torch.device("cpu"))
    return sample_tokens(DefaultSampler(EngineConfig.build(seed=seed)), logits.clone(), metadata)


@pytest.mark.parametrize("vocab_size", [1, 8, 37, 49152])
def test_packing_round_trips(vocab_size):
    token_ids = torch.randperm(vocab_size, generator=torch.Generator().manual_seed(vocab_size))[: vocab_size // 3 + 1]
    unpacked = unpack_token_bitmask(pack_token_ids(token_ids, vocab_size).unsqueeze(0), vocab_size)[0]
    assert unpacked.nonzero().flatten().tolist() == sorted(token_ids.tolist())


def test_no_mask_is_built_when_no_row_is_constrained():
    rows = rows_for([SamplingParams(temperature=0)] * 3, [None] * 3)
    assert build_sampling_metadata(*rows, torch.device("cpu")).allowed_tokens is None


def test_greedy_rows_take_the_best_allowed_token_and_batch_mates_are_untouched():
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0))
    allowed = [3, 11, 20]
    params = [SamplingParams(temperature=0, logprobs=0)] * 3
    output = sample(logits, rows_for(params, [None, FixedTokens(allowed), None]))
    assert output.token_ids[0] == logits[0].argmax() and output.token_ids[2] == logits[2].argmax()
    best_allowed = allowed[int(logits[1, allowed].argmax())]
    assert output.token_ids[1] == best_allowed
    # Logprobs and ranks are those of the raw distribution, not of the masked one.
    raw = logits[1].log_softmax(-1)
    assert output.logprobs[1] == pytest.approx(raw[best_allowed].item())
    assert output.ranks[1] == int((raw > raw[best_allowed]).sum()) + 1


def test_sampled_rows_draw_only_allowed_tokens():
    logits = torch.zeros(64, VOCAB)
    logits[:, 0] = 10.0  # the most likely token is not allowed
    allowed = [5, 6, 30]
    params = [SamplingParams(temperature=1.0, top_k=2, top_p=0.9, repetition_penalty=1.2, logit_bias={0: 5})] * 64
    output = sample(logits, rows_for(params, [FixedTokens(allowed)] * 64))
    assert set(output.token_ids.tolist()) <= set(allowed)
    assert len(set(output.token_ids.tolist())) > 1  # still a draw among them

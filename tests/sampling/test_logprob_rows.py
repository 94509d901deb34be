"""Only the rows that need their chosen token's logprob (logprobs asked for, best_of > n) get one; the
tokens are those of the general path, which scores every row."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.default_sampler import DefaultSampler
from pagedllm_core.entrypoints.llm import LLM
from pagedllm_core.sampling.pipeline import sample_tokens
from pagedllm_core.sampling_params import SamplingParams
from pagedllm_core.testing import build_sampling_rows
from pagedllm_core.worker.model_runner import _to_token_logprobs
from pagedllm_core.worker.sampling_metadata import build_sampling_metadata

VOCAB = 101

MIXED = [
    SamplingParams(temperature=0),  # greedy, no logprobs
    SamplingParams(temperature=0.9, top_k=20, seed=5),  # sampled, no logprobs
    SamplingParams(temperature=0, logprobs=0),  # greedy with the chosen token's logprob
    SamplingParams(temperature=1.0, top_p=0.8, seed=6),  # sampled, no logprobs
    SamplingParams(n=1, best_of=3, temperature=1.0, seed=7),  # ranked by cumulative logprob
    SamplingParams(temperature=0, repetition_penalty=1.3),  # greedy with an edit to the logits
]


def sample_both_ways(params, logits):
    """(fast path, general path): the same rows sampled with ``logprob_rows`` as built and with every row scored."""
    outputs = []
    for score_every_row in (False, True):
        batch, rows = build_sampling_rows(params, VOCAB, outputs=[[3, 4]] * len(params))
        for row in rows:
            seed = row.sequence.sampling_params.seed
            row.generator = None if seed is None else torch.Generator().manual_seed(seed)
        metadata = build_sampling_metadata(batch, rows, torch.device("cpu"))
        metadata.generators = {i: row.generator for i, row in enumerate(rows) if row.generator is not None}
        if score_every_row:
            metadata = dataclasses.replace(metadata, logprob_rows=None)
        sampler = DefaultSampler(EngineConfig.build(seed=0))
        outputs.append(_to_token_logprobs(sample_tokens(sampler, logits.clone(), metadata)))
    return outputs


@pytest.mark.parametrize("with_top_logprobs", [False, True])
def test_mixed_batch_draws_the_same_tokens_and_scores_the_rows_that_need_it(with_top_logprobs):
    # Without a logprobs row only the best_of row is scored; with one (ranks and top logprobs asked
    # for) the whole batch goes through one log-softmax.
    params = MIXED if with_top_logprobs else [p for p in MIXED if p.logprobs is None]
    needed = [row for row, p in enumerate(params) if p.logprobs is not None or p.best_of > p.n]
    logits = torch.randn(len(params), VOCAB, generator=torch.Generator().manual_seed(0))
    fast, general = sample_both_ways(params, logits)
    assert [entry.token_id for entry in fast] == [entry.token_id for entry in general]
    for row, (entry, reference) in enumerate(zip(fast, general)):
        if row in needed:
            assert entry.logprob == pytest.approx(reference.logprob, abs=1e-6)
            assert entry.logprob == pytest.approx(logits[row].log_softmax(-1)[entry.token_id].item(), abs=1e-5)
        elif not with_top_logprobs:
            assert entry.logprob is None
    if with_top_logprobs:
        assert fast[2].rank == general[2].rank == 1  # logprobs=0 asks for the rank as well


def test_all_greedy_batch_is_argmax_with_nothing_scored():
    params = [SamplingParams(temperature=0)] * 4
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(1))
    fast, general = sample_both_ways(params, logits)
    assert [entry.token_id for entry in fast] == logits.argmax(-1).tolist() == [entry.token_id for entry in general]
    assert all(entry.logprob is None for entry in fast)
    assert all(entry.logprob is not None for entry in general)


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    return LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", block_size=4)


def test_engine_reports_cumulative_logprob_only_when_asked_and_keeps_the_tokens(llm):
    prompts = [{"prompt_token_ids": ids} for ids in ([1, 5, 9, 2], [7, 7, 3], [4, 8, 15, 16, 23])]
    greedy = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    with_logprobs = dataclasses.replace(greedy, logprobs=0)
    seeded = SamplingParams(temperature=0.8, seed=11, max_tokens=8, ignore_eos=True)
    # One batch mixing greedy, seeded sampling and logprobs, against each request alone with logprobs.
    mixed = llm.generate(prompts, [greedy, seeded, with_logprobs], use_tqdm=False)
    alone = [
        llm.generate(prompt, dataclasses.replace(params, logprobs=0), use_tqdm=False)[0]
        for prompt, params in zip(prompts, [greedy, seeded, greedy])
    ]
    assert [out.outputs[0].token_ids for out in mixed] == [out.outputs[0].token_ids for out in alone]
    assert mixed[0].outputs[0].cumulative_logprob is None and mixed[0].outputs[0].logprobs is None
    assert mixed[1].outputs[0].cumulative_logprob is None
    assert mixed[2].outputs[0].cumulative_logprob == pytest.approx(alone[2].outputs[0].cumulative_logprob, abs=1e-5)
    assert mixed[2].outputs[0].cumulative_logprob == pytest.approx(
        sum(position[token].logprob for token, position in zip(mixed[2].outputs[0].token_ids, mixed[2].outputs[0].logprobs)),
        abs=1e-5,
    )

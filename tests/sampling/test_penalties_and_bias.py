"""Penalties, logit bias and min_tokens against a straightforward per-row reference."""

import torch

from pagedllm_core.sampling_params import SamplingParams

VOCAB = 16


def reference_logits(logits, params, prompt, output):
    """The textbook definitions, one row and one token at a time."""
    logits = logits.clone()
    for token, bias in params.logit_bias.items():
        logits[token] += bias
    for token in set(prompt) | set(output):
        if logits[token] > 0:
            logits[token] /= params.repetition_penalty
        else:
            logits[token] *= params.repetition_penalty
    for token in set(output):
        logits[token] -= params.frequency_penalty * output.count(token)
        logits[token] -= params.presence_penalty
    return logits


def test_penalties_and_bias_match_the_reference_on_random_logits(sample):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, VOCAB, generator=generator) * 3
    params = [
        SamplingParams(temperature=0, repetition_penalty=1.3),
        SamplingParams(temperature=0, frequency_penalty=0.7, presence_penalty=-0.4),
        SamplingParams(temperature=0, logit_bias={3: 5.0, 7: -100}),
        SamplingParams(temperature=0, repetition_penalty=0.8, frequency_penalty=1.5, logit_bias={1: 2.5}),
        SamplingParams(temperature=0),  # untouched row in the same batch
    ]
    prompts = [torch.randint(0, VOCAB, (6,), generator=generator).tolist() for _ in params]
    outputs = [torch.randint(0, VOCAB, (9,), generator=generator).tolist() for _ in params]
    tokens = sample(logits, params, outputs=outputs, prompts=prompts).token_ids
    for row, row_params in enumerate(params):
        expected = reference_logits(logits[row], row_params, prompts[row], outputs[row])
        assert tokens[row] == expected.argmax(), f"row {row}"


def test_penalties_shift_the_greedy_choice(sample):
    logits = torch.zeros(1, VOCAB)
    logits[0, 4] = 1.0
    logits[0, 5] = 0.9
    penalized = SamplingParams(temperature=0, frequency_penalty=1.0)
    assert sample(logits, [penalized], outputs=[[4]]).token_ids.item() == 5
    assert sample(logits, [SamplingParams(temperature=0)], outputs=[[4]]).token_ids.item() == 4


def test_min_tokens_forbids_stop_tokens_until_reached(sample):
    logits = torch.zeros(2, VOCAB)
    eos = VOCAB - 1  # the fixture's EOS
    logits[:, eos] = 10.0
    logits[:, 2] = 5.0
    params = [SamplingParams(temperature=0, min_tokens=3), SamplingParams(temperature=0, min_tokens=3)]
    tokens = sample(logits, params, outputs=[[1, 1], [1, 1, 1]]).token_ids.tolist()
    assert tokens == [2, eos]

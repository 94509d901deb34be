"""Constrained generation on random-weight tiny models: random logits stress the masks, and every
output must still match. Unconstrained requests sharing the batch must be unaffected."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from guided_checks import allowed_token_ids
from guided_schemas import CHOICES, REGEXES, SCHEMAS

from pagedllm_core import LLM, BeamSearchParams, SamplingParams, StructuredOutputsParams
from pagedllm_core.testing import build_tiny_model

PROMPTS = ["The quick brown fox", "Hello, world! How are"]


@pytest.fixture(scope="module", params=["LlamaForCausalLM", "Qwen2ForCausalLM"])
def llm(request, tmp_path_factory):
    model_dir = build_tiny_model(tmp_path_factory.mktemp(request.param), request.param)
    return LLM(model=str(model_dir), num_kv_blocks=256, max_model_len=512)


def sampled(spec: StructuredOutputsParams, seed: int, max_tokens: int = 300, **settings) -> SamplingParams:
    return SamplingParams(temperature=1.0, seed=seed, max_tokens=max_tokens, structured_outputs=spec, **settings)


def test_sampled_outputs_validate_against_their_schemas(llm):
    names = list(SCHEMAS)
    params = [sampled(StructuredOutputsParams(json=SCHEMAS[name]), seed, n=2) for seed, name in enumerate(names)]
    outputs = llm.generate([PROMPTS[i % 2] for i in range(len(names))], params, use_tqdm=False)
    for name, output in zip(names, outputs):
        for completion in output.outputs:
            assert completion.finish_reason == "stop", (name, completion.text)
            jsonschema.validate(json.loads(completion.text), SCHEMAS[name])


def test_regex_outputs_fully_match_and_choices_are_choices(llm):
    params = [sampled(StructuredOutputsParams(regex=regex), seed, n=3) for seed, regex in enumerate(REGEXES)]
    params.append(sampled(StructuredOutputsParams(choice=CHOICES), 7, n=3, best_of=4))
    outputs = llm.generate([PROMPTS[0]] * len(params), params, use_tqdm=False)
    for regex, output in zip(REGEXES, outputs):
        for completion in output.outputs:
            assert re.fullmatch(regex, completion.text), (regex, completion.text)
    for completion in outputs[-1].outputs:
        assert completion.text in CHOICES
        # The output ends when the automaton can only end: no EOS token is drawn for it.
        assert completion.finish_reason == "stop" and completion.stop_reason is None
        assert llm.get_tokenizer().decode(completion.token_ids) == completion.text


def test_unconstrained_requests_in_the_same_batch_are_unaffected(llm):
    greedy = SamplingParams(temperature=0, max_tokens=12)
    alone = llm.generate(PROMPTS, greedy, use_tqdm=False)
    constrained = sampled(StructuredOutputsParams(json=SCHEMAS["nested"]), seed=0)
    mixed = llm.generate([PROMPTS[0], PROMPTS[0], PROMPTS[1]], [greedy, constrained, greedy], use_tqdm=False)
    assert [mixed[0].outputs[0].token_ids, mixed[2].outputs[0].token_ids] == [o.outputs[0].token_ids for o in alone]
    jsonschema.validate(json.loads(mixed[1].outputs[0].text), SCHEMAS["nested"])


def test_greedy_picks_the_most_likely_allowed_token_and_reports_raw_logprobs(llm):
    spec = StructuredOutputsParams(choice=["dogs", "cats", "trains", "99"])
    vocab_size = llm.llm_engine.vocab_size
    (raw,) = llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=1, logprobs=vocab_size), use_tqdm=False)
    raw_logprobs = {token: entry.logprob for token, entry in raw.outputs[0].logprobs[0].items()}
    state = llm.llm_engine.constraint_compiler.compile(spec).new_state()
    allowed = allowed_token_ids(state, vocab_size)
    expected = max(allowed, key=raw_logprobs.__getitem__)

    (output,) = llm.generate(
        PROMPTS[0], SamplingParams(temperature=0, logprobs=0, structured_outputs=spec), use_tqdm=False
    )
    completion = output.outputs[0]
    assert completion.text in spec.choice
    assert completion.token_ids[0] == expected
    assert completion.logprobs[0][expected].logprob == pytest.approx(raw_logprobs[expected], abs=1e-5)


def test_beam_search_keeps_every_beam_inside_the_constraint(llm):
    regex = REGEXES[0]
    params = BeamSearchParams(beam_width=3, max_tokens=20, structured_outputs=StructuredOutputsParams(regex=regex))
    (result,) = llm.beam_search(PROMPTS[0], params)
    num_prompt_tokens = len(llm.get_tokenizer().encode(PROMPTS[0]))
    assert len(result.sequences) == 3
    for beam in result.sequences:
        generated = llm.get_tokenizer().decode(beam.tokens[num_prompt_tokens:], skip_special_tokens=True)
        assert re.fullmatch(regex, generated), generated
        assert beam.finish_reason == "stop"
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0


def test_preempted_sequences_resume_their_constraint(tmp_path):
    model_dir = build_tiny_model(tmp_path, "LlamaForCausalLM")
    # Six blocks of 16 tokens for four sequences of up to 64 tokens: they take turns, recomputing.
    llm = LLM(model=str(model_dir), num_kv_blocks=6, block_size=16, max_model_len=64)
    schema = SCHEMAS["enum"]
    params = sampled(StructuredOutputsParams(json=schema), seed=3, max_tokens=48)
    outputs = llm.generate([PROMPTS[0]] * 4, params, use_tqdm=False)
    assert llm.llm_engine.scheduler.num_preemptions > 0
    for output in outputs:
        jsonschema.validate(json.loads(output.outputs[0].text), schema)

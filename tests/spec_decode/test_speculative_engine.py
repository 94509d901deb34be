"""Speculative decoding in the engine: the same greedy tokens as without it, and no leaked KV blocks."""

import pytest

from pagedllm_core import LLM, SamplingParams
from pagedllm_core.structured_outputs import StructuredOutputsParams
from tests.engine.greedy_reference import ARCHITECTURES, PROMPTS

NUM_NEW_TOKENS = 24
GREEDY = SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 1, "prompt_lookup_max": 3}


@pytest.fixture(scope="module")
def engines(tiny_model_dir):
    """``engines(architecture, speculative_config=None, **settings)`` -> an ``LLM``, built once per module."""
    built = {}

    def get(architecture, speculative_config=None, **settings):
        key = (architecture, repr(speculative_config), repr(sorted(settings.items())))
        if key not in built:
            built[key] = LLM(
                model=str(tiny_model_dir(architecture)),
                dtype="float32",
                speculative_config=speculative_config,
                **settings,
            )
        return built[key]

    return get


def draft_config(tiny_model_dir, architecture):
    """Another random model with the target's tokenizer: it disagrees with the target nearly always."""
    draft = tiny_model_dir(architecture, num_hidden_layers=1)
    return {"method": "draft_model", "model": str(draft), "num_speculative_tokens": 3}


def self_draft_config(tiny_model_dir, architecture="LlamaForCausalLM"):
    """The target drafting for itself: greedy drafts are all accepted, so verified runs are long."""
    return {"method": "draft_model", "model": str(tiny_model_dir(architecture)), "num_speculative_tokens": 3}


def token_ids(llm, prompts=PROMPTS, params=GREEDY):
    return [output.outputs[0].token_ids for output in llm.generate(prompts, params, use_tqdm=False)]


def assert_no_blocks_held(llm):
    pool = llm.llm_engine.kv_cache_manager.pool
    assert pool.num_free_blocks == pool.num_blocks
    assert not llm.llm_engine.kv_cache_manager.block_tables


@pytest.mark.parametrize(
    "architecture",
    [ARCHITECTURES[0], *(pytest.param(architecture, marks=pytest.mark.slow) for architecture in ARCHITECTURES[1:])],
)
@pytest.mark.parametrize("method", ["ngram", "draft_model"])
def test_speculative_greedy_tokens_equal_plain_decoding(architecture, method, engines, tiny_model_dir):
    expected = token_ids(engines(architecture))
    config = NGRAM if method == "ngram" else draft_config(tiny_model_dir, architecture)
    llm = engines(architecture, config, block_size=4)
    assert token_ids(llm) == expected
    stats = llm.llm_engine.spec_decode_stats
    # Some drafts were rejected, so rollback ran.
    assert 0 <= stats.num_accepted_tokens < stats.num_draft_tokens
    assert_no_blocks_held(llm)


def test_a_draft_identical_to_the_target_is_always_accepted(engines, tiny_model_dir):
    llm = engines("LlamaForCausalLM", self_draft_config(tiny_model_dir))
    assert token_ids(llm) == token_ids(engines("LlamaForCausalLM"))
    stats = llm.llm_engine.spec_decode_stats
    assert stats.acceptance_rate == 1.0
    assert stats.mean_accepted_length > 3.5


@pytest.mark.parametrize("method", ["ngram", "draft_model"])
def test_preempted_speculative_sequences_give_identical_tokens_and_free_their_blocks(method, engines, tiny_model_dir):
    expected = token_ids(engines("LlamaForCausalLM"))
    reference = engines("LlamaForCausalLM").generate(PROMPTS, GREEDY, use_tqdm=False)
    longest = max(len(output.prompt_token_ids) for output in reference)
    max_model_len = longest + NUM_NEW_TOKENS
    config = NGRAM if method == "ngram" else self_draft_config(tiny_model_dir)
    llm = engines(
        "LlamaForCausalLM", config, block_size=4, num_kv_blocks=-(-max_model_len // 4) + 2, max_model_len=max_model_len
    )
    assert token_ids(llm) == expected
    assert llm.llm_engine.scheduler.num_preemptions > 0
    assert llm.llm_engine.spec_decode_stats.num_draft_tokens > 0
    assert_no_blocks_held(llm)


@pytest.mark.parametrize("method", ["ngram", "draft_model"])
def test_aborting_speculative_sequences_frees_their_blocks(method, engines, tiny_model_dir):
    config = NGRAM if method == "ngram" else self_draft_config(tiny_model_dir)
    engine = engines("LlamaForCausalLM", config, block_size=4).llm_engine
    for index, prompt in enumerate(PROMPTS):
        engine.add_request(str(index), prompt, SamplingParams(temperature=0, max_tokens=200, ignore_eos=True))
    for _ in range(8):
        engine.step()
    assert engine.spec_decode_stats.num_draft_tokens > 0
    engine.abort_request([str(index) for index in range(len(PROMPTS))])
    assert not engine.has_unfinished_requests()
    assert engine.kv_cache_manager.pool.num_free_blocks == engine.kv_cache_manager.pool.num_blocks


def test_stop_strings_and_stop_tokens_inside_a_verified_run_cut_it(engines, tiny_model_dir):
    plain = engines("LlamaForCausalLM")
    speculative = engines("LlamaForCausalLM", self_draft_config(tiny_model_dir))
    reference = plain.generate(PROMPTS, GREEDY, use_tqdm=False)
    prompts = [{"prompt_token_ids": output.prompt_token_ids} for output in reference]
    completions = [output.outputs[0] for output in reference]
    # Stops in the middle of the output, where runs of several verified tokens are being emitted.
    requests = [
        [
            SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, stop_token_ids=[c.token_ids[NUM_NEW_TOKENS // 2]])
            for c in completions
        ],
        [
            SamplingParams(
                temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True, stop=[c.text[len(c.text) // 2 :][:3]]
            )
            for c in completions
        ],
        SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS // 3 + 1, ignore_eos=True),
    ]
    for params in requests:
        expected = plain.generate(prompts, params, use_tqdm=False)
        got = speculative.generate(prompts, params, use_tqdm=False)
        for want, have in zip(expected, got):
            assert have.outputs[0].token_ids == want.outputs[0].token_ids
            assert have.outputs[0].text == want.outputs[0].text
            assert have.outputs[0].finish_reason == want.outputs[0].finish_reason
            assert len(have.outputs[0].token_ids) < NUM_NEW_TOKENS
    assert_no_blocks_held(speculative)


def test_logprobs_of_verified_tokens_equal_plain_decoding(engines, tiny_model_dir):
    params = SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True, logprobs=2)
    expected = engines("LlamaForCausalLM").generate(PROMPTS, params, use_tqdm=False)
    llm = engines("LlamaForCausalLM", self_draft_config(tiny_model_dir))
    got = llm.generate(PROMPTS, params, use_tqdm=False)
    for want, have in zip(expected, got):
        assert have.outputs[0].token_ids == want.outputs[0].token_ids
        assert len(have.outputs[0].logprobs) == NUM_NEW_TOKENS
        for want_position, have_position in zip(want.outputs[0].logprobs, have.outputs[0].logprobs):
            assert have_position.keys() == want_position.keys()
            for token_id, entry in want_position.items():
                assert have_position[token_id].logprob == pytest.approx(entry.logprob, abs=1e-4)
                assert have_position[token_id].rank == entry.rank


def test_sampling_with_n_and_a_seed_is_reproducible_and_leaks_nothing(engines, tiny_model_dir):
    llm = engines("LlamaForCausalLM", self_draft_config(tiny_model_dir))
    params = SamplingParams(temperature=1.0, n=3, seed=11, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)
    first = llm.generate(PROMPTS, params, use_tqdm=False)
    second = llm.generate(PROMPTS, params, use_tqdm=False)
    for a, b in zip(first, second):
        assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]
        assert all(len(c.token_ids) == NUM_NEW_TOKENS for c in a.outputs)
    stats = llm.llm_engine.spec_decode_stats
    # Drafts are the target's argmax; sampling at temperature 1 accepts some and rejects others.
    assert 0 < stats.num_accepted_tokens < stats.num_draft_tokens
    assert_no_blocks_held(llm)


def test_sequences_that_cannot_speculate_decode_plainly_beside_those_that_can(engines):
    plain, speculative = engines("LlamaForCausalLM"), engines("LlamaForCausalLM", NGRAM)
    requests = [
        SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True, repetition_penalty=1.3),
        SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True, min_tokens=NUM_NEW_TOKENS // 2),
        SamplingParams(
            temperature=0, max_tokens=NUM_NEW_TOKENS, structured_outputs=StructuredOutputsParams(regex="[a-z ]{1,30}")
        ),
        GREEDY,
    ]
    expected = plain.generate(PROMPTS, requests, use_tqdm=False)
    got = speculative.generate(PROMPTS, requests, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in got] == [o.outputs[0].token_ids for o in expected]
    assert_no_blocks_held(speculative)


def test_speculation_runs_in_a_worker_process(engines, tiny_model_dir):
    expected = token_ids(engines("LlamaForCausalLM"))
    llm = LLM(
        model=str(tiny_model_dir("LlamaForCausalLM")),
        dtype="float32",
        distributed_executor_backend="mp",
        speculative_config=self_draft_config(tiny_model_dir),
    )
    try:
        assert token_ids(llm) == expected
        assert llm.llm_engine.spec_decode_stats.num_accepted_tokens > 0
    finally:
        llm.llm_engine.shutdown()

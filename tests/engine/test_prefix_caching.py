"""Prefix caching changes how much of a prompt is computed, never what is generated."""

import random

import pytest

from pagedllm_core import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
BLOCK_SIZE = 4
PREFIX_LENGTH = 40


def prompts_sharing_a_prefix(num_prompts: int, prefix_length: int = PREFIX_LENGTH, seed: int = 0) -> list[list[int]]:
    """The prefix alone (whole blocks), then the prefix with suffixes of 1, 2, ... random tokens."""
    rng = random.Random(seed)
    prefix = [rng.randrange(3, 512) for _ in range(prefix_length)]
    return [prefix + [rng.randrange(3, 512) for _ in range(length)] for length in range(num_prompts)]


def generate_in_turns(directory, batches, params, **settings):
    """Generate each batch after the previous one finished, on one engine; token ids per sequence."""
    llm = LLM(model=str(directory), dtype="float32", block_size=BLOCK_SIZE, **settings)
    tokens = []
    for batch in batches:
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in batch], params, use_tqdm=False)
        tokens.append([[completion.token_ids for completion in output.outputs] for output in outputs])
    return tokens, llm


def assert_no_block_held(llm):
    manager = llm.llm_engine.kv_cache_manager
    assert manager.num_used_blocks == 0
    assert all(count == 0 for count in manager.pool.ref_counts)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="plain"),
        pytest.param({"max_num_batched_tokens": 7}, id="chunked-prefill"),
        pytest.param({"num_kv_blocks": 18, "max_model_len": 64}, id="preemption"),
    ],
)
def test_greedy_tokens_are_identical_with_and_without_prefix_caching(settings, tiny_model_dir):
    directory = tiny_model_dir("LlamaForCausalLM")
    prompts = prompts_sharing_a_prefix(6)
    # The first prompt alone, then all of them: the second batch finds the first one's blocks.
    batches = [prompts[:1], prompts]
    expected, _ = generate_in_turns(directory, batches, GREEDY, enable_prefix_caching=False, **settings)
    tokens, llm = generate_in_turns(directory, batches, GREEDY, **settings)
    assert tokens == expected
    stats = llm.llm_engine.prefix_cache_stats()
    assert stats.num_hit_tokens >= 5 * (PREFIX_LENGTH - BLOCK_SIZE)
    assert_no_block_held(llm)
    if "num_kv_blocks" in settings:
        assert llm.llm_engine.scheduler.num_preemptions > 0


def test_parallel_sampling_is_identical_with_and_without_prefix_caching(tiny_model_dir):
    directory = tiny_model_dir("LlamaForCausalLM")
    prompts = prompts_sharing_a_prefix(3, seed=1)
    params = SamplingParams(n=3, temperature=0.8, seed=7, max_tokens=10, ignore_eos=True)
    batches = [prompts[1:2], prompts]
    expected, _ = generate_in_turns(directory, batches, params, enable_prefix_caching=False)
    tokens, llm = generate_in_turns(directory, batches, params)
    assert tokens == expected
    assert llm.llm_engine.prefix_cache_stats().num_hit_tokens > 0
    assert_no_block_held(llm)


def test_prompt_logprobs_requests_compute_their_whole_prompt(tiny_model_dir):
    directory = tiny_model_dir("LlamaForCausalLM")
    prompt = prompts_sharing_a_prefix(2)[1]
    llm = LLM(model=str(directory), dtype="float32", block_size=BLOCK_SIZE)
    llm.generate([{"prompt_token_ids": prompt}], GREEDY, use_tqdm=False)
    hits_before = llm.llm_engine.prefix_cache_stats().num_hit_tokens
    params = SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=1)
    (output,) = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
    assert llm.llm_engine.prefix_cache_stats().num_hit_tokens == hits_before
    assert len(output.prompt_logprobs) == len(prompt) and all(output.prompt_logprobs[1:])

    uncached = LLM(model=str(directory), dtype="float32", block_size=BLOCK_SIZE, enable_prefix_caching=False)
    (expected,) = uncached.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
    assert output.prompt_logprobs == expected.prompt_logprobs


def test_a_second_request_with_a_shared_400_token_prefix_computes_only_its_own_tokens(tiny_model_dir):
    directory = tiny_model_dir("LlamaForCausalLM")
    first, second = prompts_sharing_a_prefix(2, prefix_length=400, seed=2)
    second = second + [7] * 7  # the prefix and 8 tokens of its own

    def prompt_tokens_computed(enable_prefix_caching: bool) -> int:
        llm = LLM(model=str(directory), dtype="float32", enable_prefix_caching=enable_prefix_caching)
        llm.generate([{"prompt_token_ids": first}], GREEDY, use_tqdm=False)
        scheduler = llm.llm_engine.scheduler
        schedule = scheduler.schedule
        num_tokens = []

        def recording_schedule():
            output = schedule()
            num_tokens.append(output.num_scheduled_tokens)
            return output

        scheduler.schedule = recording_schedule
        llm.generate([{"prompt_token_ids": second}], SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)
        return sum(num_tokens)

    assert prompt_tokens_computed(enable_prefix_caching=False) == 408
    assert prompt_tokens_computed(enable_prefix_caching=True) == 8

"""Greedy tokens from the engine equal transformers' greedy tokens on the same weights."""

import pytest

from pagedllm_core import LLM, SamplingParams
from tests.engine.greedy_reference import ARCHITECTURES, NUM_NEW_TOKENS, engine_settings, model_overrides

GREEDY = SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)


def sized_model(tiny_model_dir, architecture):
    """The tiny model with the head size the environment asks for (see greedy_reference)."""
    return tiny_model_dir(architecture, **model_overrides(architecture))


def generate_greedy(directory, prompt_ids, **settings):
    llm = LLM(model=str(directory), dtype="float32", **engine_settings(), **settings)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], GREEDY, use_tqdm=False)
    stats = llm.llm_engine.kv_cache_stats()
    return [output.outputs[0].token_ids for output in outputs], stats, llm


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_batch_of_prompts_matches_transformers(architecture, tiny_model_dir, transformers_greedy):
    prompt_ids, expected = transformers_greedy(architecture)
    tokens, stats, _ = generate_greedy(sized_model(tiny_model_dir, architecture), prompt_ids)
    assert tokens == expected
    assert stats.num_used_blocks == 0


@pytest.mark.parametrize("block_size", [1, 16, 32])
def test_block_sizes_match_transformers(block_size, tiny_model_dir, transformers_greedy):
    prompt_ids, expected = transformers_greedy("LlamaForCausalLM")
    directory = sized_model(tiny_model_dir, "LlamaForCausalLM")
    tokens, stats, _ = generate_greedy(directory, prompt_ids, block_size=block_size)
    assert tokens == expected
    assert stats.num_used_blocks == 0


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "OPTForCausalLM"])
def test_preemption_in_a_tiny_pool_gives_identical_tokens(architecture, tiny_model_dir, transformers_greedy):
    prompt_ids, expected = transformers_greedy(architecture)
    longest = max(len(ids) for ids in prompt_ids) + NUM_NEW_TOKENS
    # Room for one longest sequence plus a little: the four requests cannot all run at once.
    num_blocks = -(-longest // 4) + 2
    tokens, stats, llm = generate_greedy(
        sized_model(tiny_model_dir, architecture),
        prompt_ids,
        block_size=4,
        num_kv_blocks=num_blocks,
        max_model_len=longest,
    )
    assert tokens == expected
    assert stats.num_used_blocks == 0
    assert llm.llm_engine.scheduler.num_preemptions > 0


def test_chunked_prefill_gives_identical_tokens(tiny_model_dir, transformers_greedy):
    prompt_ids, expected = transformers_greedy("Qwen2ForCausalLM")
    directory = sized_model(tiny_model_dir, "Qwen2ForCausalLM")
    tokens, _, _ = generate_greedy(directory, prompt_ids, max_num_batched_tokens=5)
    assert tokens == expected

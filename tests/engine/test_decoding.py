"""SamplingParams end to end: logprobs against transformers, seeds, n/best_of on shared blocks, stop strings."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from pagedllm_core import LLM, SamplingParams
from tests.engine.greedy_reference import PROMPTS


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    return LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", block_size=4)


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir("LlamaForCausalLM"), dtype=torch.float32).eval()


def reference_logprobs(model, token_ids):
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].float().log_softmax(-1)


def first_occurring_substring(text: str, start: int, length: int = 4) -> tuple[int, str]:
    """A substring of ``text`` at or after ``start`` that does not occur earlier, and where it starts."""
    for begin in range(start, len(text) - length):
        if text.find(text[begin : begin + length]) == begin:
            return begin, text[begin : begin + length]
    raise AssertionError(f"no usable stop string in {text!r}")


def assert_no_blocks_in_use(llm):
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0


def test_logprobs_match_transformers_for_chosen_and_top_tokens(llm, reference_model):
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=6, logprobs=3, prompt_logprobs=2, ignore_eos=True)
    (output,) = llm.generate(PROMPTS[1], params, use_tqdm=False)
    completion = output.outputs[0]
    all_ids = output.prompt_token_ids + completion.token_ids
    expected = reference_logprobs(reference_model, all_ids)
    num_prompt = len(output.prompt_token_ids)

    for step, (token, position_logprobs) in enumerate(zip(completion.token_ids, completion.logprobs)):
        row = expected[num_prompt - 1 + step]
        assert token in position_logprobs
        top3 = row.topk(3).indices.tolist()
        assert set(top3) <= set(position_logprobs)
        for token_id, entry in position_logprobs.items():
            assert entry.logprob == pytest.approx(row[token_id].item(), abs=1e-4)
            assert entry.rank == int((row > row[token_id]).sum()) + 1
        assert position_logprobs[top3[0]].rank == 1
    assert completion.cumulative_logprob == pytest.approx(
        sum(expected[num_prompt - 1 + i, t].item() for i, t in enumerate(completion.token_ids)), abs=1e-3
    )

    assert output.prompt_logprobs[0] is None
    assert len(output.prompt_logprobs) == num_prompt
    for position in range(1, num_prompt):
        entries = output.prompt_logprobs[position]
        token = output.prompt_token_ids[position]
        assert entries[token].logprob == pytest.approx(expected[position - 1, token].item(), abs=1e-4)
        assert len(entries) in (2, 3)
    assert_no_blocks_in_use(llm)


def test_prompt_logprobs_survive_chunked_prefill(tiny_model_dir):
    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", max_num_batched_tokens=3)
    (output,) = llm.generate(PROMPTS[3], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    assert len(output.prompt_logprobs) == len(output.prompt_token_ids)
    assert all(len(entries) == 1 for entries in output.prompt_logprobs[1:])


def test_same_seed_same_output_whatever_else_is_in_the_batch(llm):
    seeded = SamplingParams(temperature=1.0, seed=42, max_tokens=10, ignore_eos=True)
    alone = llm.generate(PROMPTS[0], seeded, use_tqdm=False)[0].outputs[0].token_ids
    crowd = [SamplingParams(temperature=1.0, max_tokens=10, ignore_eos=True)] * 3
    batched = llm.generate([*PROMPTS[1:], PROMPTS[0]], [*crowd, seeded], use_tqdm=False)
    assert batched[-1].outputs[0].token_ids == alone
    other_seed = llm.generate(PROMPTS[0], SamplingParams(temperature=1.0, seed=43, max_tokens=10, ignore_eos=True), use_tqdm=False)
    assert other_seed[0].outputs[0].token_ids != alone


def test_parallel_sampling_shares_prompt_blocks_and_frees_them(llm):
    engine = llm.llm_engine
    params = SamplingParams(n=4, temperature=1.0, seed=7, max_tokens=5, ignore_eos=True)
    engine.add_request("fan", PROMPTS[3], params)
    engine.step()  # the prompt is prefilled once and forked into four sequences
    stats = engine.kv_cache_stats()
    prompt_blocks = len(engine.kv_cache_manager.block_tables[engine._requests["fan"].first.seq_id])
    assert stats.num_referenced_blocks == 4 * prompt_blocks
    assert stats.num_used_blocks == prompt_blocks
    outputs = []
    while engine.has_unfinished_requests():
        outputs.extend(engine.step())
    final = outputs[-1]
    assert final.finished and [c.index for c in final.outputs] == [0, 1, 2, 3]
    assert all(len(c.token_ids) == 5 for c in final.outputs)
    assert len({tuple(c.token_ids) for c in final.outputs}) > 1
    assert_no_blocks_in_use(llm)


def test_best_of_returns_the_n_most_likely(llm):
    (output,) = llm.generate(PROMPTS[0], SamplingParams(n=2, best_of=5, temperature=1.0, seed=1, max_tokens=4), use_tqdm=False)
    assert len(output.outputs) == 2
    first, second = output.outputs
    assert first.cumulative_logprob >= second.cumulative_logprob
    assert_no_blocks_in_use(llm)


def test_abort_mid_generation_frees_forked_blocks(llm):
    engine = llm.llm_engine
    engine.add_request("to-abort", PROMPTS[1], SamplingParams(n=3, temperature=1.0, max_tokens=50, ignore_eos=True))
    engine.add_request("waiting-beside", PROMPTS[2], SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    engine.step()
    assert engine.kv_cache_stats().num_used_blocks > 0
    (aborted, beside) = engine.abort_request(["to-abort", "waiting-beside"])
    assert aborted.finished and all(c.finish_reason == "abort" for c in aborted.outputs)
    assert not engine.has_unfinished_requests()
    assert_no_blocks_in_use(llm)


def test_stop_strings_cut_exactly_where_they_start(llm):
    free_run = llm.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)
    text = free_run[0].outputs[0].text
    start, stop = first_occurring_substring(text, 5)  # usually spans a token boundary
    (cut,) = llm.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=[stop]), use_tqdm=False)
    assert cut.outputs[0].text == text[:start]
    assert cut.outputs[0].finish_reason == "stop" and cut.outputs[0].stop_reason == stop
    (kept,) = llm.generate(
        PROMPTS[1],
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=stop, include_stop_str_in_output=True),
        use_tqdm=False,
    )
    assert kept.outputs[0].text == text[: start + len(stop)]
    assert_no_blocks_in_use(llm)


def test_stop_token_ids_and_min_tokens(llm):
    free_run = llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    tokens = free_run[0].outputs[0].token_ids
    (stopped,) = llm.generate(
        PROMPTS[0], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, stop_token_ids=[tokens[2]]), use_tqdm=False
    )
    assert stopped.outputs[0].token_ids == tokens[: tokens.index(tokens[2]) + 1]
    assert stopped.outputs[0].stop_reason == tokens[2]
    (delayed,) = llm.generate(
        PROMPTS[0],
        SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, stop_token_ids=[tokens[0]], min_tokens=2),
        use_tqdm=False,
    )
    assert tokens[0] not in delayed.outputs[0].token_ids[:2]


def test_streamed_text_never_shows_a_partial_stop_string(llm):
    engine = llm.llm_engine
    free_run = llm.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)
    text = free_run[0].outputs[0].text
    start, stop = first_occurring_substring(text, 6)
    engine.add_request("stream", PROMPTS[1], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=stop))
    seen = []
    while engine.has_unfinished_requests():
        seen.extend(output.outputs[0].text for output in engine.step())
    assert all(stop not in partial and text.startswith(partial) for partial in seen)
    assert seen[-1] == text[:start]


def test_bad_values_raise_clear_errors(llm):
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingParams(top_p=1.5)
    with pytest.raises(ValueError, match="best_of must be >= n"):
        SamplingParams(n=3, best_of=2)
    with pytest.raises(ValueError, match="logit_bias token ids must be in"):
        llm.generate("hi", SamplingParams(logit_bias={10**6: 1.0}), use_tqdm=False)
    assert_no_blocks_in_use(llm)


def test_the_stop_token_that_ends_a_sequence_stays_out_of_its_text(llm):
    greedy = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, skip_special_tokens=False)
    tokens = llm.generate(PROMPTS[0], greedy, use_tqdm=False)[0].outputs[0].token_ids
    stop_at = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])
    tokenizer = llm.get_tokenizer()
    for include, expected_tokens in ((False, tokens[:stop_at]), (True, tokens[: stop_at + 1])):
        params = SamplingParams(
            temperature=0, max_tokens=8, ignore_eos=True, skip_special_tokens=False,
            stop_token_ids=[tokens[stop_at]], include_stop_str_in_output=include,
        )
        (completion,) = llm.generate(PROMPTS[0], params, use_tqdm=False)[0].outputs
        assert completion.token_ids == tokens[: stop_at + 1] and completion.stop_reason == tokens[stop_at]
        assert completion.text == tokenizer.decode(expected_tokens, skip_special_tokens=False)

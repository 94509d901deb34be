"""Incremental detokenization equals a full decode and never releases half a character."""

import pytest

from pagedllm_core.engine.detokenizer import IncrementalDetokenizer
from pagedllm_core.testing import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(512)


@pytest.mark.parametrize("text", ["Hello, world! How are you?", "naïve café — 東京 🙂 done", "🙂🙂 x"])
def test_token_by_token_text_equals_full_decode(tokenizer, text):
    prompt_ids = tokenizer.encode("Prompt:")
    output_ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(output_ids) > len(text.encode()) // 4  # multi-byte characters span several tokens
    detokenizer = IncrementalDetokenizer(tokenizer, prompt_ids, skip_special_tokens=True)
    pieces = [detokenizer.add_tokens([token]) for token in output_ids]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == detokenizer.text == tokenizer.decode(output_ids)

"""Token bytes for outlines-core: GPT-2 byte-level and SentencePiece byte-fallback spellings."""

from __future__ import annotations

import pytest
from pagedllm_guided_json.backend import OutlinesBackend
from pagedllm_guided_json.vocabulary import is_byte_level, token_bytes
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from pagedllm_core.structured_outputs import StructuredOutputsParams


@pytest.fixture(scope="module")
def sentencepiece_tokenizer():
    """A Llama-2-style tokenizer: '▁' for spaces and <0xNN> tokens for bytes without a token."""
    vocab = {
        "<unk>": 0,
        "<s>": 1,
        "</s>": 2,
        "<0x0A>": 3,
        "<0xC3>": 4,
        "<0xA9>": 5,
        "▁": 6,
        "h": 7,
        "i": 8,
        "hi": 9,
        "▁hi": 10,
    }
    model = models.BPE(vocab=vocab, merges=[("h", "i"), ("▁", "hi")], byte_fallback=True, unk_token="<unk>")
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_byte_level_tokens_are_the_bytes_they_decode_to(tiny_tokenizer):
    assert is_byte_level(tiny_tokenizer)
    spelled = token_bytes(tiny_tokenizer)
    assert len(spelled) > 256  # every byte plus merges
    for token_id, data in spelled.items():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # part of a multi-byte character
        assert tiny_tokenizer.decode([token_id]) == text


def test_special_tokens_are_left_out(tiny_tokenizer):
    spelled = token_bytes(tiny_tokenizer)
    assert not set(tiny_tokenizer.all_special_ids) & set(spelled)


def test_sentencepiece_spaces_and_byte_tokens(sentencepiece_tokenizer):
    assert not is_byte_level(sentencepiece_tokenizer)
    assert token_bytes(sentencepiece_tokenizer) == {
        3: b"\n",
        4: b"\xc3",
        5: b"\xa9",
        6: b" ",
        7: b"h",
        8: b"i",
        9: b"hi",
        10: b" hi",
    }


def test_a_regex_over_a_sentencepiece_vocabulary_spells_bytes(sentencepiece_tokenizer):
    backend = OutlinesBackend(sentencepiece_tokenizer, 11, frozenset({2}))
    state = backend.compile(StructuredOutputsParams(regex="é hi\n")).new_state()
    for token in (4, 5, 10, 3):  # é as two byte tokens, then " hi", then a newline
        assert state.accept_token(token)
    assert state.is_complete()

"""Incremental detokenization: new text per step without re-decoding whole sequences."""

from __future__ import annotations

# Decoding a few tokens before the new ones lets tokenizers that merge spaces into the next piece
# (SentencePiece, byte-level BPE) render the boundary the way a full decode would.
CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """Turns a growing list of output token ids into text, one step at a time.

    Text is released only once it no longer ends in an incomplete UTF-8 character (``\\ufffd``), so
    a multi-byte character split across tokens never reaches the user half-made.
    """

    def __init__(self, tokenizer, prompt_token_ids: list[int], skip_special_tokens: bool):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.token_ids = list(prompt_token_ids[-CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.token_ids)
        self.text = ""

    def add_tokens(self, new_token_ids: list[int]) -> str:
        """Append tokens; returns the text they completed (possibly empty) and adds it to ``text``."""
        self.token_ids.extend(new_token_ids)
        prefix_text = self._decode(self.token_ids[self.prefix_offset : self.read_offset])
        full_text = self._decode(self.token_ids[self.prefix_offset :])
        if len(full_text) <= len(prefix_text) or full_text.endswith("\ufffd"):
            return ""
        new_text = full_text[len(prefix_text) :]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.token_ids)
        self.text += new_text
        return new_text

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(
            token_ids, skip_special_tokens=self.skip_special_tokens, clean_up_tokenization_spaces=False
        )

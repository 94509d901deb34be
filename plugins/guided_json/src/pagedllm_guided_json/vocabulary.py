"""The bytes each token stands for, which is what outlines-core matches regexes against."""

from __future__ import annotations

import functools
import re

# SentencePiece spells a leading space as this and a raw byte as "<0x0A>".
SENTENCEPIECE_SPACE = "\u2581"
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_bytes(tokenizer) -> dict[int, bytes]:
    """Token id -> the bytes it adds to the text, for every ordinary token.

    Special and added tokens (``<|im_end|>``, ``<pad>``, ...) are left out: they are control tokens,
    not text, and a constrained output never contains them (EOS is handled by the caller).
    """
    excluded = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    to_bytes = _byte_level_bytes if is_byte_level(tokenizer) else _sentencepiece_bytes
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return {token_id: to_bytes(token) for token_id, token in enumerate(tokens) if token_id not in excluded and token}


def is_byte_level(tokenizer) -> bool:
    """Whether tokens are spelled in GPT-2's byte-to-character alphabet (GPT-2, Llama 3, Qwen, SmolLM)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in str(backend.decoder)


@functools.cache
def _byte_of_character() -> dict[str, int]:
    """GPT-2's alphabet: printable Latin-1 bytes stand for themselves, the other bytes are shifted
    past 255 so that every byte has a visible character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {chr(byte): byte for byte in printable}
    shifted = [byte for byte in range(256) if byte not in printable]
    for offset, byte in enumerate(shifted):
        mapping[chr(256 + offset)] = byte
    return mapping


def _byte_level_bytes(token: str) -> bytes:
    table = _byte_of_character()
    if all(character in table for character in token):
        return bytes(table[character] for character in token)
    return token.encode("utf-8")  # a token added in plain text


def _sentencepiece_bytes(token: str) -> bytes:
    match = _BYTE_TOKEN.match(token)
    if match:
        return bytes([int(match.group(1), 16)])
    return token.replace(SENTENCEPIECE_SPACE, " ").encode("utf-8")

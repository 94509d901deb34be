"""``\\d``, ``\\w`` and ``\\s`` mean ASCII classes, as in JSON Schema's regex dialect and vLLM."""

from __future__ import annotations

import pytest
from outlines_core import Index, Vocabulary
from pagedllm_guided_json.regexes import ascii_shorthand_classes, spec_regex

from pagedllm_core.structured_outputs import StructuredOutputsParams

UNICODE_DIGIT = "\U0001fbf8"  # SEGMENTED DIGIT EIGHT: a Unicode digit


@pytest.mark.parametrize(
    "regex, expected",
    [
        (r"\d{3}-\d{4}", "[[:digit:]]{3}-[[:digit:]]{4}"),
        (r"\w+\s\S\D\W", "[[:word:]]+[[:space:]][[:^space:]][[:^digit:]][[:^word:]]"),
        (r"[^\s:@]+", "[^[:space:]:@]+"),
        (r"[a\d-]", "[a[:digit:]-]"),
        (r"[]\d]", "[][:digit:]]"),
        (r"\\d", r"\\d"),  # an escaped backslash, then a literal d
        (r"\.\x41\p{L}", r"\.\x41\p{L}"),
        (r"[[:alpha:]\d]", "[[:alpha:][:digit:]]"),
    ],
)
def test_shorthand_escapes_become_ascii_classes(regex, expected):
    assert ascii_shorthand_classes(regex) == expected


def first_tokens(regex: str, vocabulary: dict[bytes, list[int]]) -> set[int]:
    index = Index(regex, Vocabulary(99, vocabulary))
    return set(index.get_allowed_tokens(index.get_initial_state()))


@pytest.mark.parametrize(
    "spec",
    [
        StructuredOutputsParams(regex=r"\d{3}-\d{4}"),
        StructuredOutputsParams(json={"type": "string", "pattern": r"^\d{3}-\d{4}$"}),
    ],
)
def test_a_phone_number_pattern_allows_only_ascii_digits(spec):
    vocabulary = {b"1": [1], UNICODE_DIGIT.encode(): [2], b'"': [3], b"-": [4]}
    allowed = first_tokens(spec_regex(spec), vocabulary)
    if spec.json is not None:  # the JSON string opens with a quote first
        index = Index(spec_regex(spec), Vocabulary(99, vocabulary))
        allowed = set(index.get_allowed_tokens(index.get_next_state(index.get_initial_state(), 3)))
    assert allowed == {1}

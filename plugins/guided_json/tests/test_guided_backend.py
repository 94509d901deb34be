"""The outlines backend on a real tiny tokenizer: masks, automaton states and compile errors."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from guided_checks import VOCAB_SIZE, allowed_token_ids, random_walk
from guided_schemas import CHOICES, REGEXES, SCHEMAS

from pagedllm_core.sampling.constraints import StructuredOutputError
from pagedllm_core.structured_outputs import StructuredOutputsParams
from pagedllm_core.testing import EOS_TOKEN_ID, PAD_TOKEN_ID

EOS = frozenset({EOS_TOKEN_ID})


def walks(backend, tokenizer, spec: StructuredOutputsParams, num_walks: int = 20) -> list[str]:
    compiled = backend.compile(spec)
    generator = torch.Generator().manual_seed(0)
    return [tokenizer.decode(random_walk(compiled.new_state(), VOCAB_SIZE, EOS, generator)) for _ in range(num_walks)]


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_walk_through_a_schema_mask_is_valid_json_for_the_schema(backend, tiny_tokenizer, name):
    for text in walks(backend, tiny_tokenizer, StructuredOutputsParams(json=SCHEMAS[name])):
        jsonschema.validate(json.loads(text), SCHEMAS[name])


@pytest.mark.parametrize("regex", REGEXES)
def test_every_walk_through_a_regex_mask_fully_matches(backend, tiny_tokenizer, regex):
    for text in walks(backend, tiny_tokenizer, StructuredOutputsParams(regex=regex)):
        assert re.fullmatch(regex, text), text


def test_walks_through_choices_give_each_choice(backend, tiny_tokenizer):
    texts = walks(backend, tiny_tokenizer, StructuredOutputsParams(choice=CHOICES), num_walks=40)
    assert set(texts) == set(CHOICES)


def accepts_whole(state, tokenizer, text: str) -> bool:
    """Whether ``state`` accepts the tokens of ``text`` one by one and may end after them."""
    for token in tokenizer.encode(text, add_special_tokens=False):
        if not state.accept_token(token):
            return False
    return EOS_TOKEN_ID in allowed_token_ids(state, VOCAB_SIZE)


@pytest.mark.parametrize(
    "text, accepted",
    [
        ('{"a": [1, 2.5], "b": {"c": "x y"}, "d": true, "e": null}', True),
        ("{}", True),
        ('{"a": {"b": [1]}}', False),  # nested deeper than json_object allows
        ("[1, 2]", False),
        ('{"a": 1', False),
    ],
)
def test_json_object_accepts_json_objects_nested_two_deep(backend, tiny_tokenizer, text, accepted):
    state = backend.compile(StructuredOutputsParams(json_object=True)).new_state()
    assert accepts_whole(state, tiny_tokenizer, text) is accepted


def test_eos_is_allowed_exactly_where_the_output_may_end(backend, tiny_tokenizer):
    state = backend.compile(StructuredOutputsParams(regex=r"ab(c)?")).new_state()
    for text, may_end in (("a", False), ("b", True)):
        (token,) = tiny_tokenizer.convert_tokens_to_ids([text])
        assert state.accept_token(token)
        assert (EOS_TOKEN_ID in allowed_token_ids(state, VOCAB_SIZE)) is may_end
    assert not state.is_complete()  # "c" may still follow
    (token,) = tiny_tokenizer.convert_tokens_to_ids(["c"])
    assert state.accept_token(token) and state.is_complete()
    assert allowed_token_ids(state, VOCAB_SIZE) == [EOS_TOKEN_ID]


def test_special_tokens_are_never_allowed(backend):
    state = backend.compile(StructuredOutputsParams(json_object=True)).new_state()
    allowed = set(allowed_token_ids(state, VOCAB_SIZE))
    assert PAD_TOKEN_ID not in allowed and EOS_TOKEN_ID not in allowed
    assert allowed  # "{" and friends


def test_a_copy_advances_independently(backend, tiny_tokenizer):
    state = backend.compile(StructuredOutputsParams(choice=["ab", "cd"])).new_state()
    copy = state.copy()
    a, c = tiny_tokenizer.convert_tokens_to_ids(["a", "c"])
    assert state.accept_token(a) and copy.accept_token(c)
    assert state.allowed_token_bitmask().tolist() != copy.allowed_token_bitmask().tolist()


def test_a_token_outside_the_mask_is_rejected_and_ends_the_state(backend, tiny_tokenizer):
    state = backend.compile(StructuredOutputsParams(regex="a+")).new_state()
    (z,) = tiny_tokenizer.convert_tokens_to_ids(["z"])
    assert not state.accept_token(z)
    assert state.is_complete()


@pytest.mark.parametrize(
    "spec, reason",
    [
        (StructuredOutputsParams(json={"type": "tuple"}), "Unsupported type: tuple"),
        (StructuredOutputsParams(json={"$ref": "#/definitions/missing"}), "reference"),
        (StructuredOutputsParams(regex="(ab"), "missing ), unterminated subpattern"),
        (StructuredOutputsParams(regex=r"(?<=a)b"), "lookaround"),
    ],
)
def test_invalid_specs_fail_with_the_reason(backend, spec, reason):
    with pytest.raises(StructuredOutputError, match=re.escape(reason)):
        backend.compile(spec)

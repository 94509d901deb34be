"""Every way a request can ask for structured output becomes the same ``StructuredOutputsParams``."""

from __future__ import annotations

import pytest

from pagedllm_core import StructuredOutputsParams
from pagedllm_core.server.errors import InvalidRequestError
from pagedllm_core.server.protocol import ChatCompletionRequest, CompletionRequest
from tests.server.conftest import LIMITS

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
MESSAGES = [{"role": "user", "content": "Hi"}]

EQUIVALENT = {
    "response_format-json_schema": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}},
        StructuredOutputsParams(json=SCHEMA),
    ),
    "response_format-json_object": (
        {"response_format": {"type": "json_object"}},
        StructuredOutputsParams(json_object=True),
    ),
    "structured_outputs-json": ({"structured_outputs": {"json": SCHEMA}}, StructuredOutputsParams(json=SCHEMA)),
    "structured_outputs-json-string": (
        {
            "structured_outputs": {
                "json": '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}'
            }
        },
        StructuredOutputsParams(json=SCHEMA),
    ),
    "structured_outputs-regex": ({"structured_outputs": {"regex": "a+"}}, StructuredOutputsParams(regex="a+")),
    "structured_outputs-choice": (
        {"structured_outputs": {"choice": ["x", "y"]}},
        StructuredOutputsParams(choice=["x", "y"]),
    ),
    "structured_outputs-json_object": (
        {"structured_outputs": {"json_object": True}},
        StructuredOutputsParams(json_object=True),
    ),
    "guided_json": ({"guided_json": SCHEMA}, StructuredOutputsParams(json=SCHEMA)),
    "guided_regex": ({"guided_regex": "a+"}, StructuredOutputsParams(regex="a+")),
    "guided_choice": ({"guided_choice": ["x", "y"]}, StructuredOutputsParams(choice=["x", "y"])),
    "response_format-text": ({"response_format": {"type": "text"}}, None),
    "nothing": ({}, None),
}


@pytest.mark.parametrize("fields, expected", EQUIVALENT.values(), ids=EQUIVALENT.keys())
def test_chat_and_completion_fields_give_the_same_params(fields, expected):
    chat = ChatCompletionRequest(messages=MESSAGES, **fields).to_sampling_params(LIMITS)
    completion = CompletionRequest(prompt="Hi", **fields).to_sampling_params(LIMITS)
    assert chat.structured_outputs == completion.structured_outputs == expected


def test_beam_search_carries_the_constraint():
    body = CompletionRequest(prompt="Hi", n=2, use_beam_search=True, guided_regex="a+")
    assert body.to_beam_search_params(LIMITS, room=100).structured_outputs == StructuredOutputsParams(regex="a+")


@pytest.mark.parametrize(
    "fields, param, message",
    [
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice", "at most one structured-output field"),
        ({"response_format": {"type": "json_object"}, "guided_json": SCHEMA}, "response_format", "at most one"),
        ({"structured_outputs": {}}, "structured_outputs", "exactly one of"),
        ({"structured_outputs": {"choice": []}}, "structured_outputs", "non-empty list"),
        ({"response_format": {"type": "json_schema"}}, "response_format", "needs json_schema.schema"),
        ({"guided_json": "{oops"}, "guided_json", "not valid JSON"),
    ],
)
def test_conflicting_or_empty_fields_are_400s_naming_the_field(fields, param, message):
    with pytest.raises(InvalidRequestError, match=message) as caught:
        CompletionRequest(prompt="Hi", **fields).to_sampling_params(LIMITS)
    assert caught.value.param == param

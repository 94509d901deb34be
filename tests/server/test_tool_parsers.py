"""Each tool-call parser on well-formed, partial and malformed outputs; streamed pieces add up to the whole."""

from __future__ import annotations

import json

import pytest

from pagedllm_core.server.tool_calls import ToolCallReader
from pagedllm_core.server.tool_parsers import TOOL_PARSERS, FunctionCall, get_tool_parser
from pagedllm_core.server.tool_parsers.forced import NamedFunctionCall, RequiredToolCalls

WEATHER = FunctionCall("get_weather", '{"city": "Paris", "unit": "celsius"}')
TIME = FunctionCall("get_time", "{}")

# parser -> (output, expected content, expected calls)
WELL_FORMED = {
    "hermes-one": (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
        None,
        [WEATHER],
    ),
    "hermes-text-then-two": (
        "hermes",
        'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
        '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>',
        "Let me check.",
        [WEATHER, TIME],
    ),
    "hermes-unclosed-last": (
        "hermes",
        '<tool_call>{"name": "get_time", "arguments": {}}',
        None,
        [TIME],
    ),
    "hermes-quoted-arguments": (
        "hermes",
        '<tool_call>{"name": "get_time", "arguments": "{}"}</tool_call>',
        None,
        [TIME],
    ),
    "llama3-one": (
        "llama3_json",
        '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
        None,
        [WEATHER],
    ),
    "llama3-python-tag-two": (
        "llama3_json",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
        '{"name": "get_time", "parameters": {}}',
        None,
        [WEATHER, TIME],
    ),
    "mistral-array": (
        "mistral",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
        '{"name": "get_time", "arguments": {}}]',
        None,
        [WEATHER, TIME],
    ),
    "mistral-args-form": (
        "mistral",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}[TOOL_CALLS]get_time[ARGS]{}',
        None,
        [WEATHER, TIME],
    ),
}

# Output that must come back whole as content.
MALFORMED = {
    "hermes-no-call": ("hermes", "The weather in Paris is sunny."),
    "hermes-broken-json": ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": "Par</tool_call>'),
    "hermes-no-name": ("hermes", '<tool_call>{"arguments": {}}</tool_call>'),
    "hermes-arguments-not-object": ("hermes", '<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>'),
    "hermes-text-after-unclosed": ("hermes", '<tool_call>{"name": "f", "arguments": {}} and more'),
    "hermes-empty-tag": ("hermes", "<tool_call></tool_call>"),
    "llama3-text-first": ("llama3_json", 'Sure: {"name": "f", "parameters": {}}'),
    "llama3-not-json": ("llama3_json", "{this is not json}"),
    "llama3-other-object": ("llama3_json", '{"answer": 42}'),
    "mistral-truncated": ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": '),
    "mistral-not-a-list": ("mistral", "[TOOL_CALLS] hello"),
}


@pytest.mark.parametrize("parser_name, output, content, calls", WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_well_formed_calls_are_found(parser_name, output, content, calls):
    parsed = get_tool_parser(parser_name).parse(output)
    assert parsed.calls == calls
    assert parsed.content == content


@pytest.mark.parametrize("parser_name, output", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_output_is_plain_content(parser_name, output):
    parsed = get_tool_parser(parser_name).parse(output)
    assert parsed.calls == [] and parsed.content == output


@pytest.mark.parametrize("parser_name, output, content, calls", WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_streamed_pieces_add_up_to_the_whole(parser_name, output, content, calls):
    """Fed one character at a time, a stream sends the same calls and no marker as content."""
    stream = ToolCallReader(get_tool_parser(parser_name)).stream()
    sent_content, sent_calls = "", {}
    for end in range(1, len(output) + 1):
        piece = stream.feed(output[:end], final=end == len(output))
        sent_content += piece.content
        for delta in piece.tool_calls:
            call = sent_calls.setdefault(delta.index, {"name": "", "arguments": ""})
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
            assert (delta.id is not None) == (delta.function.name is not None)
    assert [FunctionCall(**sent_calls[index]) for index in sorted(sent_calls)] == calls
    assert sent_content.strip() == (content or "")


@pytest.mark.parametrize("parser_name, output", MALFORMED.values(), ids=MALFORMED.keys())
def test_streamed_malformed_output_arrives_as_content(parser_name, output):
    stream = ToolCallReader(get_tool_parser(parser_name)).stream()
    pieces = [stream.feed(output[:end], final=end == len(output)) for end in range(1, len(output) + 1)]
    assert "".join(piece.content for piece in pieces) == output
    assert not any(piece.tool_calls for piece in pieces)


def test_text_that_may_begin_a_marker_is_held_back_then_released():
    stream = ToolCallReader(get_tool_parser("hermes")).stream()
    assert stream.feed("Hi <tool", final=False).content == "Hi "
    assert stream.feed("Hi <tool time", final=False).content == "<tool time"


def test_mistral_call_ids_are_nine_letters_or_digits():
    reader = ToolCallReader(get_tool_parser("mistral"))
    (call,) = reader.message('[TOOL_CALLS] [{"name": "get_time", "arguments": {}}]').tool_calls
    assert len(call.id) == 9 and call.id.isalnum()


def test_required_reads_the_constrained_array():
    parsed = RequiredToolCalls().parse('[{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}]')
    assert parsed.calls == [WEATHER] and parsed.content is None
    assert RequiredToolCalls().parse('[{"name": "get_weather", "parameters": ').calls == []


def test_named_function_reads_its_arguments_and_streams_them_as_generated():
    parser = NamedFunctionCall("get_weather")
    assert parser.parse('{"city": "Paris", "unit": "celsius"}').calls == [WEATHER]
    assert parser.parse('{"city": "Par').calls == []
    stream = ToolCallReader(parser).stream()
    first, second = stream.feed('{"city": ', final=False), stream.feed('{"city": "Paris"}', final=True)
    assert first.tool_calls[0].function.name == "get_weather" and first.tool_calls[0].id
    arguments = "".join(delta.function.arguments for delta in first.tool_calls + second.tool_calls)
    assert json.loads(arguments) == {"city": "Paris"}


def test_every_parser_is_registered_under_its_vllm_name():
    assert set(TOOL_PARSERS) == {"hermes", "llama3_json", "mistral"}
    with pytest.raises(ValueError, match="hermes, llama3_json, mistral"):
        get_tool_parser("qwen")

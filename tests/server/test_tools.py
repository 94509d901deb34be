"""Tool calling on /v1/chat/completions with the tiny model: tool_choice modes, follow-up turns, errors."""

from __future__ import annotations

import importlib.util
import json

import httpx
import jsonschema
import openai
import pytest

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.server.app import build_app
from pagedllm_core.server.background import BackgroundServer
from pagedllm_core.testing import EOS_TOKEN_ID
from tests.server.conftest import MODEL_NAME, settings, wait_until_idle
from tests.server.test_errors import assert_error

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER_PARAMETERS}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now"}},
]
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": {"type": "object", "properties": {}}}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
FOLLOW_UP = [
    *USER,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
]
# A template that shows tools and tool calls, as Qwen's and Hermes' do.
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content or '' }}"
    "{% for call in message.tool_calls or [] %}<tool_call>{{ call.function | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def long_model(tiny_model_dir):
    """The tiny Llama with room for tool definitions: its tokenizer spends about a token per character."""
    return tiny_model_dir("LlamaForCausalLM", max_position_embeddings=2048)


@pytest.fixture(scope="module")
def engine(long_model):
    config = EngineConfig(model=str(long_model), num_kv_blocks=512, max_num_seqs=16, max_model_len=2048)
    engine = AsyncLLMEngine.from_config(config)
    yield engine
    engine.shutdown(timeout=10)


def serve(engine, model, **overrides):
    return BackgroundServer(build_app(engine, settings(model, **overrides), shutdown_engine=False))


@pytest.fixture(scope="module")
def plain_server(engine, long_model):
    with serve(engine, long_model) as server:
        yield server


@pytest.fixture(scope="module")
def auto_server(engine, long_model):
    with serve(engine, long_model, tool_call_parser="hermes", enable_auto_tool_choice=True, chat_template=TOOLS_TEMPLATE) as server:
        yield server


def openai_client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture
def client(plain_server):
    return openai_client(plain_server)


@pytest.fixture
def auto_client(auto_server):
    return openai_client(auto_server)


@pytest.fixture
def http(plain_server):
    with httpx.Client(base_url=plain_server.base_url, timeout=60) as http:
        yield http


@pytest.fixture(autouse=True)
def engine_is_idle_after(engine):
    yield
    wait_until_idle(engine)


def assert_calls_validate(tool_calls):
    assert tool_calls
    for call in tool_calls:
        assert call.type == "function" and call.id
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


guided = pytest.mark.skipif(
    importlib.util.find_spec("pagedllm_guided_json") is None,
    reason="forced tool choices need the guided plugin (pip install 'pagedllm[guided]')",
)


@guided
def test_named_tool_choice_returns_arguments_matching_the_schema(client):
    response = client.chat.completions.create(
        model=MODEL_NAME, messages=USER, tools=TOOLS, tool_choice=NAMED, n=4, temperature=1.0, seed=3, max_tokens=120
    )
    for choice in response.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert [call.function.name for call in choice.message.tool_calls] == ["get_weather"]
        assert_calls_validate(choice.message.tool_calls)


@guided
def test_required_tool_choice_calls_the_given_tools(client):
    response = client.chat.completions.create(
        model=MODEL_NAME, messages=USER, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
        temperature=1.0, seed=5, max_tokens=150,
    )
    (choice,) = response.choices
    assert choice.finish_reason == "tool_calls"
    assert len(choice.message.tool_calls) == 1
    assert_calls_validate(choice.message.tool_calls)


@guided
@pytest.mark.parametrize("tool_choice", [NAMED, "required"], ids=["named", "required"])
def test_streamed_forced_calls_add_up_to_the_whole(client, tool_choice):
    """The openai client's own stream accumulator rebuilds the same calls as the whole response."""
    request = dict(
        model=MODEL_NAME, messages=USER, tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=False,
        temperature=0, max_tokens=150,
    )
    whole = client.chat.completions.create(**request).choices[0]
    with client.chat.completions.stream(**request) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == whole.finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in streamed.message.tool_calls] == [
        (c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls
    ]


def test_auto_without_tools_is_a_plain_chat(http):
    response = http.post("/v1/chat/completions", json={"messages": USER, "tool_choice": "auto", "max_tokens": 2})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["tool_calls"] == []


def test_tool_choice_none_answers_with_text(client):
    response = client.chat.completions.create(model=MODEL_NAME, messages=USER, tools=TOOLS, tool_choice="none", max_tokens=5)
    (choice,) = response.choices
    assert isinstance(choice.message.content, str) and not choice.message.tool_calls
    assert choice.finish_reason == "length"


def test_auto_needs_the_server_flags(http):
    error = assert_error(http.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS}), 400, "tool_choice")
    assert "--enable-auto-tool-choice" in error["message"]


def test_auto_with_a_parser_returns_unparsed_output_as_content(auto_client):
    """The random tiny model writes no <tool_call>, so every choice is text (never a 500)."""
    response = auto_client.chat.completions.create(
        model=MODEL_NAME, messages=USER, tools=TOOLS, n=3, temperature=1.0, seed=0, max_tokens=12
    )
    for choice in response.choices:
        assert choice.message.content and not choice.message.tool_calls and choice.finish_reason == "length"
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in auto_client.chat.completions.create(
            model=MODEL_NAME, messages=USER, tools=TOOLS, temperature=0, max_tokens=12, stream=True
        )
        if chunk.choices
    )
    whole = auto_client.chat.completions.create(model=MODEL_NAME, messages=USER, tools=TOOLS, temperature=0, max_tokens=12)
    assert streamed == whole.choices[0].message.content


def test_tools_reach_a_template_that_reads_them(auto_client):
    def prompt_tokens(**extra):
        response = auto_client.chat.completions.create(model=MODEL_NAME, max_tokens=1, tool_choice="none", **extra)
        return response.usage.prompt_tokens

    assert prompt_tokens(messages=USER, tools=TOOLS) > prompt_tokens(messages=USER)
    # The follow-up turn: the template sees the assistant's call (content null) and the tool's answer.
    assert prompt_tokens(messages=FOLLOW_UP, tools=TOOLS) > prompt_tokens(messages=FOLLOW_UP[:1] + FOLLOW_UP[2:], tools=TOOLS)


def test_follow_up_conversation_renders_through_a_template_without_tools(http):
    """The tiny model's template knows nothing of tools: they are written into the messages instead."""
    with_tools = http.post("/tokenize", json={"messages": FOLLOW_UP}).json()
    response = http.post("/v1/chat/completions", json={"messages": FOLLOW_UP, "tools": TOOLS, "tool_choice": "none", "max_tokens": 3})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > with_tools["count"]  # plus the tool definitions


BAD_TOOLS = {
    "schema-not-a-schema": (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
        "tools.0.function.parameters",
    ),
    "schema-bad-required": (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": "x"}}}]},
        "tools.0.function.parameters",
    ),
    "name-with-spaces": ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools.0.function.name"),
    "no-function": ({"tools": [{"type": "function"}]}, "tools.0.function"),
    "not-a-function-tool": ({"tools": [{"type": "code_interpreter"}]}, "tools.0.type"),
    "unknown-named-function": (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "launch"}}},
        None,
    ),
    "required-without-tools": ({"tool_choice": "required"}, None),
    "unknown-tool-choice": ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    "forced-and-response-format": (
        {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
        "tool_choice",
    ),
}


@pytest.mark.parametrize("fields, param", BAD_TOOLS.values(), ids=BAD_TOOLS.keys())
def test_bad_tools_are_400s(http, fields, param):
    error = assert_error(http.post("/v1/chat/completions", json={"messages": USER, **fields}), 400)
    if param is not None:
        assert error["param"] == param


def test_context_length_exceeded_has_the_code_and_words_clients_match(client, engine):
    for request in (
        dict(messages=[{"role": "user", "content": "hi " * 1000}]),
        dict(messages=USER, max_tokens=2040),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=MODEL_NAME, **request)
        assert caught.value.code == "context_length_exceeded"
        assert f"This model's maximum context length is {engine.max_model_len} tokens" in caught.value.message
    with pytest.raises(openai.BadRequestError, match=r"However, your request has \d+ input tokens") as caught:
        client.completions.create(model=MODEL_NAME, prompt=[5] * 2048)
    assert caught.value.code == "context_length_exceeded"


def test_server_flags_are_checked():
    from pagedllm_core.server.settings import ServerSettings

    with pytest.raises(ValueError, match="--tool-call-parser"):
        ServerSettings(served_model_names=["m"], model_source="m", enable_auto_tool_choice=True)
    with pytest.raises(ValueError, match="hermes, llama3_json, mistral"):
        ServerSettings(served_model_names=["m"], model_source="m", tool_call_parser="qwen")


def test_special_token_markers_are_kept_but_not_the_stop_token(engine, long_model):
    """llama3_json looks for <|python_tag|>, so special tokens stay in the text; the stop token that
    ended the output does not show (as in vLLM), unless the client asks for it with include_stop_str_in_output."""
    with serve(engine, long_model, tool_call_parser="llama3_json", enable_auto_tool_choice=True) as server:
        client = openai_client(server)
        request = dict(model=MODEL_NAME, messages=USER, tools=TOOLS, max_tokens=5, logit_bias={str(EOS_TOKEN_ID): 100})
        (choice,) = client.chat.completions.create(**request).choices
        assert choice.finish_reason == "stop" and not choice.message.content
        (choice,) = client.chat.completions.create(**request, extra_body={"skip_special_tokens": False}).choices
        assert not choice.message.content
        extra_body = {"skip_special_tokens": False, "include_stop_str_in_output": True}
        (choice,) = client.chat.completions.create(**request, extra_body=extra_body).choices
        assert choice.message.content == engine.tokenizer.decode([EOS_TOKEN_ID])
        chunks = list(client.chat.completions.create(**request, stream=True))
        assert not "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

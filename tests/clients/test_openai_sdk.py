"""The official ``openai`` client against ``pagedllm serve``: chat, streaming, ``parse``, tools, Responses."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.clients.conftest import WEATHER_TOOL

QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_SCHEMA = WEATHER_TOOL["function"]["parameters"]


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base_url, api_key="sk-local", max_retries=0, timeout=120)


def test_chat_and_stream(client, served):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(model=served.model, messages=messages, max_tokens=24, temperature=0)
    assert "Paris" in reply.choices[0].message.content
    stream = client.chat.completions.create(
        model=served.model, messages=messages, max_tokens=24, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == reply.choices[0].message.content


class Country(BaseModel):
    name: str = Field(max_length=30)
    capital: str = Field(max_length=30)


def test_parse_with_a_pydantic_model(client, served):
    completion = client.chat.completions.parse(
        model=served.model,
        messages=[{"role": "user", "content": "Give the name and capital of France as JSON."}],
        response_format=Country,
        max_tokens=100,
        temperature=0,
    )
    assert isinstance(completion.choices[0].message.parsed, Country)


def test_forced_tool_call_validates_twenty_of_twenty_seeds(client, served):
    """tool_choice naming a function: the arguments always parse and match its schema."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    for seed in range(20):
        response = client.chat.completions.create(
            model=served.model, messages=QUESTION, tools=[WEATHER_TOOL], tool_choice=named,
            temperature=1.0, seed=seed, max_tokens=100,
        )
        (choice,) = response.choices
        assert choice.finish_reason == "tool_calls", f"seed {seed}: {choice}"
        (call,) = choice.message.tool_calls
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)


def test_required_tools_streamed_and_the_follow_up_turn(client, served):
    request = dict(
        model=served.model, messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="required",
        parallel_tool_calls=False, temperature=0, max_tokens=100,
    )
    with client.chat.completions.stream(**request) as stream:
        for _ in stream:
            pass
        completion = stream.get_final_completion()
    (call,) = completion.choices[0].message.tool_calls
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_SCHEMA)
    # The conversation goes on with the call and its result, as an agent loop sends them.
    follow_up = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "sunny"})},
    ]
    answer = client.chat.completions.create(
        model=served.model, messages=follow_up, tools=[WEATHER_TOOL], max_tokens=40, temperature=0
    )
    assert answer.choices[0].message.content


def test_responses_create_and_stream(client, served):
    response = client.responses.create(
        model=served.model, input="What is the capital of France?", instructions="Answer in one word.",
        max_output_tokens=24, temperature=0,
    )
    assert "Paris" in response.output_text
    with client.responses.stream(
        model=served.model, input="What is the capital of France?", instructions="Answer in one word.",
        max_output_tokens=24, temperature=0,
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        assert "".join(deltas) == stream.get_final_response().output_text == response.output_text


def test_context_length_exceeded(client, served):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=served.model, messages=[{"role": "user", "content": "hi " * 3000}])
    assert caught.value.code == "context_length_exceeded"
    assert f"maximum context length is {served.max_model_len} tokens" in caught.value.message

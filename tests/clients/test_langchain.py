"""LangChain's ChatOpenAI against ``pagedllm serve``: invoke, stream, batch, structured output, tools."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

langchain_openai = pytest.importorskip("langchain_openai")
from langchain_core.exceptions import ContextOverflowError  # noqa: E402
from langchain_core.tools import tool  # noqa: E402


@pytest.fixture(scope="module")
def chat(served):
    return langchain_openai.ChatOpenAI(
        base_url=served.base_url, api_key="sk-local", model=served.model, temperature=0, max_tokens=40, max_retries=0
    )


def test_invoke_stream_and_batch(chat):
    reply = chat.invoke("What is the capital of France?")
    assert "Paris" in reply.content
    assert "".join(chunk.content for chunk in chat.stream("What is the capital of France?")) == reply.content
    replies = chat.batch(["What is the capital of France?", "Say hello."])
    assert replies[0].content == reply.content and replies[1].content


class Country(BaseModel):
    """A country and its capital."""

    name: str = Field(max_length=30)
    capital: str = Field(max_length=30)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(chat, method):
    structured = chat.bind(max_tokens=100).with_structured_output(Country, method=method)
    country = structured.invoke("Give the name and capital of France.")
    assert isinstance(country, Country)


@tool
def get_weather(city: str, unit: str) -> str:
    """Get the current weather in a city; unit is celsius or fahrenheit."""
    return f"18 degrees {unit} in {city}"


def test_bind_tools_and_answer_with_the_result(chat):
    with_tools = chat.bind_tools([get_weather], tool_choice="get_weather")
    question = "What is the weather in Paris?"
    message = with_tools.invoke(question)
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "unit"}
    result = get_weather.invoke(call)  # a ToolMessage with the call's id
    answer = chat.bind_tools([get_weather]).invoke([("human", question), message, result])
    assert isinstance(answer.content, str) and not answer.tool_calls


def test_streamed_tool_call_chunks_add_up(chat):
    with_tools = chat.bind_tools([get_weather], tool_choice="get_weather")
    whole = None
    for chunk in with_tools.stream("What is the weather in Paris?"):
        whole = chunk if whole is None else whole + chunk
    (call,) = whole.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "unit"}


def test_context_overflow_is_recognised(chat):
    with pytest.raises(ContextOverflowError):
        chat.invoke("hi " * 3000)

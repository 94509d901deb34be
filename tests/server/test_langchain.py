"""LangChain's ChatOpenAI pointed at the server with base_url."""

from __future__ import annotations

import pytest

from tests.server.conftest import MODEL_NAME

langchain_openai = pytest.importorskip("langchain_openai")


def test_chat_openai_invoke_and_stream(server):
    chat = langchain_openai.ChatOpenAI(
        base_url=f"{server.base_url}/v1", api_key="unused", model=MODEL_NAME, temperature=0, max_tokens=6,
        max_retries=0, stream_usage=True,
    )
    messages = [("system", "You are terse."), ("human", "Tell me a story.")]
    reply = chat.invoke(messages)
    assert isinstance(reply.content, str) and reply.usage_metadata["output_tokens"] <= 6
    streamed = "".join(chunk.content for chunk in chat.stream(messages))
    assert streamed == reply.content

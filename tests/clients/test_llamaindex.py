"""LlamaIndex's OpenAILike against ``pagedllm serve``: chat, complete and their streams."""

from __future__ import annotations

import pytest

openai_like = pytest.importorskip("llama_index.llms.openai_like")
from llama_index.core.llms import ChatMessage  # noqa: E402

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module", params=[True, False], ids=["chat-model", "completion-model"])
def llm(served, request):
    return openai_like.OpenAILike(
        model=served.model,
        api_base=served.base_url,
        api_key="sk-local",
        is_chat_model=request.param,  # False: complete() goes to /v1/completions
        context_window=served.max_model_len,
        max_tokens=24,
        temperature=0,
        max_retries=0,
    )


def test_chat_and_stream_chat(llm):
    messages = [ChatMessage(role="system", content="Answer in one word."), ChatMessage(role="user", content=QUESTION)]
    reply = llm.chat(messages)
    assert "Paris" in reply.message.content
    streamed = "".join(chunk.delta for chunk in llm.stream_chat(messages))
    assert streamed == reply.message.content


def test_complete_and_stream_complete(llm):
    completion = llm.complete(QUESTION if llm.is_chat_model else "The capital of France is")
    assert "Paris" in completion.text
    prompt = QUESTION if llm.is_chat_model else "The capital of France is"
    assert "".join(chunk.delta for chunk in llm.stream_complete(prompt)) == completion.text

"""POST /v1/chat/completions through the openai client and raw SSE."""

from __future__ import annotations

import pytest

from tests.server.conftest import MODEL_NAME, settings
from tests.server.sse import finish_reasons, joined_texts, post_sse

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "I am fine."},
    {"role": "user", "content": "Tell me a story."},
]
GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}


def test_chat_fields(client, http):
    response = client.chat.completions.create(model=MODEL_NAME, messages=CONVERSATION, max_tokens=6, **GREEDY)
    assert response.id.startswith("chatcmpl-") and response.object == "chat.completion"
    assert response.model == MODEL_NAME and response.system_fingerprint.startswith("pagedllm-")
    (choice,) = response.choices
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    tokenized = http.post("/tokenize", json={"messages": CONVERSATION}).json()
    assert response.usage.prompt_tokens == tokenized["count"]
    assert response.usage.completion_tokens == 6


def test_max_completion_tokens_wins_over_max_tokens(client):
    response = client.chat.completions.create(
        model=MODEL_NAME, messages=CONVERSATION, max_completion_tokens=3, max_tokens=9, **GREEDY
    )
    assert response.usage.completion_tokens == 3


def test_without_max_tokens_generation_fills_the_context(client):
    response = client.chat.completions.create(model=MODEL_NAME, messages=CONVERSATION, **GREEDY)
    assert response.usage.total_tokens == 256 and response.choices[0].finish_reason == "length"


def test_text_content_parts_and_developer_role_equal_plain_messages(client):
    parts = [
        {"role": "developer", "content": [{"type": "text", "text": "You are terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hello, how are you?"}]},
    ]
    plain = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello, how are you?"}]
    first = client.chat.completions.create(model=MODEL_NAME, messages=parts, max_tokens=5, **GREEDY)
    second = client.chat.completions.create(model=MODEL_NAME, messages=plain, max_tokens=5, **GREEDY)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage


def test_seed_and_n(client):
    def sample():
        response = client.chat.completions.create(
            model=MODEL_NAME, messages=CONVERSATION, max_tokens=8, n=2, seed=11, extra_body={"ignore_eos": True}
        )
        return [choice.message.content for choice in response.choices]

    first = sample()
    assert len(first) == 2 and first == sample()


def test_logprobs(client):
    response = client.chat.completions.create(
        model=MODEL_NAME, messages=CONVERSATION, max_tokens=4, logprobs=True, top_logprobs=2, **GREEDY
    )
    content = response.choices[0].logprobs.content
    assert len(content) == 4 and all(len(entry.top_logprobs) == 2 for entry in content)
    assert all(entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-4) for entry in content)


@pytest.mark.parametrize("extra", [{}, {"n": 2, "temperature": 1, "seed": 5}], ids=["greedy", "n"])
def test_streaming_equals_non_streaming(http, extra):
    body = {"model": MODEL_NAME, "messages": CONVERSATION, "max_tokens": 10, "temperature": 0, "ignore_eos": True}
    body.update(extra)
    whole = http.post("/v1/chat/completions", json=body).json()
    events = post_sse(http, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}})
    assert all(event["object"] == "chat.completion.chunk" for event in events)
    num_choices = len(whole["choices"])
    assert [event["choices"][0]["delta"] for event in events[:num_choices]] == [
        {"role": "assistant", "content": ""}
    ] * num_choices
    texts = joined_texts(events, key=lambda choice: choice["delta"].get("content", ""))
    assert texts == {choice["index"]: choice["message"]["content"] for choice in whole["choices"]}
    assert finish_reasons(events) == {choice["index"]: choice["finish_reason"] for choice in whole["choices"]}
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]


def test_streaming_with_the_openai_client(client):
    stream = client.chat.completions.create(
        model=MODEL_NAME, messages=CONVERSATION, max_tokens=6, stream=True, stream_options={"include_usage": True},
        **GREEDY,
    )
    chunks = list(stream)
    whole = client.chat.completions.create(model=MODEL_NAME, messages=CONVERSATION, max_tokens=6, **GREEDY)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 6


def test_chat_template_flag_replaces_the_tokenizers(engine, tiny_model):
    from pagedllm_core.server.app import build_app
    from pagedllm_core.server.background import BackgroundServer

    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    app = build_app(engine, settings(tiny_model, chat_template=template), shutdown_engine=False)
    with BackgroundServer(app) as server:
        import httpx

        messages = [{"role": "user", "content": "Hello"}]
        tokens = httpx.post(f"{server.base_url}/tokenize", json={"messages": messages}).json()["tokens"]
        text = httpx.post(f"{server.base_url}/detokenize", json={"tokens": tokens}).json()["prompt"]
    assert text == "[user] Hello\n"

"""POST /v1/completions through the openai client and raw SSE."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.server.conftest import ALIAS, MODEL_NAME, wait_until_idle
from tests.server.sse import finish_reasons, joined_texts, post_sse

GREEDY = {"temperature": 0, "max_tokens": 8, "extra_body": {"ignore_eos": True}}


def test_completion_fields(client):
    response = client.completions.create(model=MODEL_NAME, prompt="Hello", **GREEDY)
    assert response.id.startswith("cmpl-") and response.object == "text_completion"
    assert response.model == MODEL_NAME and response.system_fingerprint.startswith("pagedllm-")
    assert response.created > 0
    (choice,) = response.choices
    assert choice.index == 0 and choice.finish_reason == "length" and choice.text
    assert response.usage.completion_tokens == 8
    assert response.usage.total_tokens == response.usage.prompt_tokens + 8


def test_alias_model_name_is_reported_back(client):
    assert client.completions.create(model=ALIAS, prompt="Hi", **GREEDY).model == ALIAS


@pytest.mark.parametrize(
    "prompt, num_choices",
    [("Hello", 1), (["Hello", "The quick brown fox"], 2), ([5, 6, 7], 1), ([[5, 6], [7, 8, 9]], 2)],
    ids=["text", "texts", "token-ids", "token-id-lists"],
)
def test_prompt_forms(client, prompt, num_choices):
    response = client.completions.create(model=MODEL_NAME, prompt=prompt, **GREEDY)
    assert [choice.index for choice in response.choices] == list(range(num_choices))
    assert response.usage.completion_tokens == 8 * num_choices
    if isinstance(prompt, list) and isinstance(prompt[0], list):
        assert response.usage.prompt_tokens == 5


def test_same_prompt_in_a_batch_gives_the_same_greedy_text(client):
    response = client.completions.create(model=MODEL_NAME, prompt=["Hello", "Hello"], **GREEDY)
    assert response.choices[0].text == response.choices[1].text


def test_echo_prepends_the_prompt(client, http):
    plain = client.completions.create(model=MODEL_NAME, prompt="Hello world", **GREEDY)
    echoed = client.completions.create(model=MODEL_NAME, prompt="Hello world", echo=True, **GREEDY)
    assert echoed.choices[0].text == "Hello world" + plain.choices[0].text
    ids = http.post("/tokenize", json={"prompt": "Hello world"}).json()["tokens"]
    from_ids = client.completions.create(model=MODEL_NAME, prompt=ids, echo=True, **GREEDY)
    assert from_ids.choices[0].text == "Hello world" + plain.choices[0].text


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        response = client.completions.create(
            model=MODEL_NAME, prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=seed,
            extra_body={"ignore_eos": True},
        )
        return response.choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_stop_token_ids_end_generation(client):
    response = client.completions.create(
        model=MODEL_NAME, prompt="Hello", max_tokens=8, temperature=0, extra_body={"stop_token_ids": list(range(512))}
    )
    (choice,) = response.choices
    assert choice.finish_reason == "stop" and response.usage.completion_tokens == 1
    assert choice.model_extra["stop_reason"] in range(512)


def test_stop_string_truncates_the_text(client):
    full = client.completions.create(model=MODEL_NAME, prompt="Hello", **{**GREEDY, "max_tokens": 16}).choices[0].text
    stop = full[4:6]
    response = client.completions.create(model=MODEL_NAME, prompt="Hello", stop=[stop], **{**GREEDY, "max_tokens": 16})
    (choice,) = response.choices
    assert choice.text == full[: full.index(stop)] and choice.finish_reason == "stop"


def test_n_returns_several_choices(client):
    response = client.completions.create(
        model=MODEL_NAME, prompt=["Hello", "Once"], n=2, max_tokens=6, seed=1, extra_body={"ignore_eos": True}
    )
    assert [choice.index for choice in response.choices] == [0, 1, 2, 3]
    assert response.usage.completion_tokens == 4 * 6


def test_logprobs(client):
    response = client.completions.create(model=MODEL_NAME, prompt="Hello", logprobs=3, **GREEDY)
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 8
    assert "".join(logprobs.tokens) == response.choices[0].text
    assert all(len(top) <= 3 and max(top.values()) >= chosen - 1e-4 for top, chosen in zip(
        logprobs.top_logprobs, logprobs.token_logprobs
    ))
    assert logprobs.text_offset[0] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "Hello"},
        {"prompt": ["Hello", "The quick brown fox"]},
        {"prompt": "Hello", "echo": True},
        {"prompt": [[5, 6], [7, 8, 9]], "n": 2, "seed": 3, "temperature": 1},
    ],
    ids=["one", "two-prompts", "echo", "n"],
)
def test_streaming_equals_non_streaming(client, http, body):
    body = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 10, "ignore_eos": True, **body}
    whole = http.post("/v1/completions", json=body).json()
    events = post_sse(http, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
    assert {event["id"] for event in events} == {events[0]["id"]}
    assert all(event["object"] == "text_completion" for event in events)
    assert joined_texts(events) == {choice["index"]: choice["text"] for choice in whole["choices"]}
    assert finish_reasons(events) == {choice["index"]: choice["finish_reason"] for choice in whole["choices"]}
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
    assert all("usage" not in event for event in events[:-1])


def test_streaming_with_the_openai_client(client):
    chunks = list(client.completions.create(model=MODEL_NAME, prompt="Hello", stream=True, **GREEDY))
    whole = client.completions.create(model=MODEL_NAME, prompt="Hello", **GREEDY)
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_continuous_usage_stats(http):
    body = {"prompt": "Hi", "max_tokens": 4, "ignore_eos": True, "stream_options": {"continuous_usage_stats": True}}
    events = post_sse(http, "/v1/completions", body)
    assert all("usage" in event for event in events)
    assert events[-1]["usage"]["completion_tokens"] == 4


def test_32_concurrent_requests_with_the_async_client(server, engine):
    async def one(client: openai.AsyncOpenAI, i: int) -> bool:
        max_tokens = 5 + i % 7
        if i % 2:
            stream = await client.completions.create(
                model=MODEL_NAME, prompt=f"Request {i}", max_tokens=max_tokens, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
            )
            chunks = [chunk async for chunk in stream]
            return chunks[-1].usage.completion_tokens == max_tokens
        response = await client.completions.create(
            model=MODEL_NAME, prompt=f"Request {i}", max_tokens=max_tokens, extra_body={"ignore_eos": True}
        )
        return response.usage.completion_tokens == max_tokens

    async def main() -> list[bool]:
        async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    assert all(asyncio.run(main()))
    wait_until_idle(engine)

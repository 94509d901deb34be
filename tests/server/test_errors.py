"""Every bad request gets the right status and an OpenAI error body, and the server stays healthy."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.server.conftest import API_KEY, MODEL_NAME, wait_until_idle

USER = [{"role": "user", "content": "Hi"}]

COMPLETION_CASES = {
    "unknown-model": ({"model": "gpt-4", "prompt": "Hi"}, 404, "model"),
    "negative-max-tokens": ({"prompt": "Hi", "max_tokens": -1}, 400, "max_tokens"),
    "zero-max-tokens": ({"prompt": "Hi", "max_tokens": 0}, 400, "max_tokens"),
    "temperature-too-high": ({"prompt": "Hi", "temperature": 2.5}, 400, "temperature"),
    "negative-temperature": ({"prompt": "Hi", "temperature": -0.1}, 400, "temperature"),
    "top-p-zero": ({"prompt": "Hi", "top_p": 0}, 400, "top_p"),
    "n-over-limit": ({"prompt": "Hi", "n": 5}, 400, "n"),
    "n-zero": ({"prompt": "Hi", "n": 0}, 400, "n"),
    "best-of-over-limit": ({"prompt": "Hi", "best_of": 9}, 400, "best_of"),
    "logprobs-over-limit": ({"prompt": "Hi", "logprobs": 6}, 400, "logprobs"),
    "prompt-longer-than-context": ({"prompt": [5] * 300}, 400, None),
    "prompt-plus-max-tokens-over-context": ({"prompt": [5] * 10, "max_tokens": 250}, 400, None),
    "token-id-outside-vocabulary": ({"prompt": [5, 10**6]}, 400, None),
    "negative-token-id": ({"prompt": [-3]}, 400, None),
    "empty-prompt-list": ({"prompt": []}, 400, "prompt"),
    "empty-token-list": ({"prompt": [[5], []]}, 400, "prompt"),
    "missing-prompt": ({"max_tokens": 3}, 400, "prompt"),
    "prompt-of-wrong-type": ({"prompt": 5}, 400, "prompt"),
    "suffix": ({"prompt": "Hi", "suffix": "end"}, 400, "suffix"),
    "echo-with-logprobs": ({"prompt": "Hi", "echo": True, "logprobs": 1}, 400, "logprobs"),
    "streamed-best-of": ({"prompt": "Hi", "stream": True, "best_of": 2}, 400, "best_of"),
    "negative-seed": ({"prompt": "Hi", "seed": -1}, 400, None),
    "presence-penalty-out-of-range": ({"prompt": "Hi", "presence_penalty": 3}, 400, "presence_penalty"),
    "logit-bias-out-of-range": ({"prompt": "Hi", "logit_bias": {"5": 500}}, 400, None),
    "logit-bias-unknown-token": ({"prompt": "Hi", "logit_bias": {"999999": 5}}, 400, None),
    "negative-stop-token-id": ({"prompt": "Hi", "stop_token_ids": [-1]}, 400, None),
    "min-tokens-over-max-tokens": ({"prompt": "Hi", "max_tokens": 2, "min_tokens": 5}, 400, None),
}

CHAT_CASES = {
    "unknown-model": ({"model": "gpt-4", "messages": USER}, 404, "model"),
    "unknown-role": ({"messages": [{"role": "wizard", "content": "Hi"}]}, 400, "messages.0.role"),
    "tool-message-without-call-id": ({"messages": [{"role": "tool", "content": "42"}]}, 400, "messages.0"),
    "null-content-without-tool-calls": ({"messages": [{"role": "user", "content": None}]}, 400, "messages.0"),
    "no-messages": ({"messages": []}, 400, "messages"),
    "image-part": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        400,
        "messages.0.content",
    ),
    "functions": ({"messages": USER, "functions": [{"name": "f"}]}, 400, "functions"),
    "unknown-response-format": ({"messages": USER, "response_format": {"type": "grammar"}}, 400, "response_format.type"),
    "per-request-chat-template": ({"messages": USER, "chat_template": "{{ 1 }}"}, 400, "chat_template"),
    "top-logprobs-without-logprobs": ({"messages": USER, "top_logprobs": 2}, 400, "top_logprobs"),
    "top-logprobs-over-limit": ({"messages": USER, "logprobs": True, "top_logprobs": 6}, 400, "top_logprobs"),
    "zero-max-completion-tokens": ({"messages": USER, "max_completion_tokens": 0}, 400, "max_completion_tokens"),
    "max-tokens-over-context": ({"messages": USER, "max_tokens": 10_000}, 400, None),
    "template-failure": ({"messages": [{"role": "user", "content": "Hi"}], "chat_template_kwargs": {"tokenize": 1}}, 400, None),
}


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.fixture(autouse=True)
def server_stays_healthy(http, engine):
    yield
    assert http.get("/health").status_code == 200
    wait_until_idle(engine)


@pytest.mark.parametrize("body, status, param", COMPLETION_CASES.values(), ids=COMPLETION_CASES.keys())
def test_completion_errors(http, body, status, param):
    assert_error(http.post("/v1/completions", json=body), status, param)


@pytest.mark.parametrize("body, status, param", CHAT_CASES.values(), ids=CHAT_CASES.keys())
def test_chat_errors(http, body, status, param):
    assert_error(http.post("/v1/chat/completions", json=body), status, param)


def test_unknown_model_is_not_found_for_the_openai_client(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gpt-4", prompt="Hi")
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_bad_request_for_the_openai_client(client):
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=-5)


@pytest.mark.parametrize("content", [b"{not json", b'{"prompt": "Hi",}', b""], ids=["garbage", "trailing-comma", "empty"])
def test_malformed_json(http, content):
    response = http.post("/v1/completions", content=content, headers={"content-type": "application/json"})
    assert_error(response, 400)


def test_body_over_the_limit(http):
    assert_error(http.post("/v1/completions", json={"prompt": "x" * 100_000}), 413)


def test_chunked_body_over_the_limit(http):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    response = http.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_error(response, 413)


@pytest.mark.parametrize("path, method", [("/v1/nothing", "GET"), ("/v1/completions", "GET")])
def test_unknown_routes_answer_in_the_error_shape(http, path, method):
    response = http.request(method, path)
    assert_error(response, 404 if path == "/v1/nothing" else 405)


class TestApiKey:
    @pytest.fixture
    def secured(self, secured_server):
        with httpx.Client(base_url=secured_server.base_url, timeout=30) as http:
            yield http

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}, {"Authorization": f"Basic {API_KEY}"}],
        ids=["missing", "wrong", "no-scheme", "wrong-scheme"],
    )
    def test_rejected_without_the_right_key(self, secured, headers):
        for path, body in [("/v1/completions", {"prompt": "Hi", "max_tokens": 2}), ("/tokenize", {"prompt": "Hi"})]:
            error = assert_error(secured.post(path, json=body, headers=headers), 401)
            assert error["code"] == "invalid_api_key"
        assert_error(secured.get("/v1/models", headers=headers), 401)

    def test_accepted_with_the_key(self, secured_server, secured):
        client = openai.OpenAI(base_url=f"{secured_server.base_url}/v1", api_key=API_KEY, max_retries=0)
        assert client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=2).choices
        assert [model.id for model in client.models.list()] == [MODEL_NAME, "tiny-alias"]

    def test_operational_routes_stay_open(self, secured):
        assert secured.get("/health").status_code == 200
        assert secured.get("/version").status_code == 200
        assert secured.get("/metrics").status_code == 200

    def test_openai_client_raises_authentication_error(self, secured_server):
        client = openai.OpenAI(base_url=f"{secured_server.base_url}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=2)

"""Limits and passthrough: template kwargs, prompts per request, admission, docs, the key, aborts, 500s, logs."""

from __future__ import annotations

import logging
import re
import threading
import time

import httpx
import pytest

from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.server.app import build_app
from pagedllm_core.server.background import BackgroundServer
from pagedllm_core.server.settings import ServerLimits, ServerSettings
from tests.server.conftest import API_KEY, LIMITS, MODEL_NAME, settings, wait_until_idle
from tests.server.fake_engine import FakeEngine

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


@pytest.mark.parametrize("kwargs", [{"enable_thinking": False}, {"add_generation_prompt": True}, {}])
def test_allowed_chat_template_kwargs_pass(http, kwargs):
    response = http.post("/v1/chat/completions", json={**CHAT, "chat_template_kwargs": kwargs})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"return_tensors": "pt"}, "'return_tensors' is not allowed"),
        ({"tools": [{"type": "function"}]}, "'tools' is not allowed"),
        ({"chat_template": "{{ 1 }}"}, "'chat_template' is not allowed"),
        ({"tokenize": False}, "'tokenize' is not allowed"),
        ({"enable_thinking": "yes"}, "'enable_thinking' must be a bool"),
    ],
)
def test_other_chat_template_kwargs_get_a_400(http, kwargs, message):
    response = http.post("/v1/chat/completions", json={**CHAT, "chat_template_kwargs": kwargs})
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    assert "add_generation_prompt" in response.json()["error"]["message"] or "must be" in message


def test_template_kwargs_win_over_the_top_level_fields(http):
    body = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}],
        "max_tokens": 2,
        "chat_template_kwargs": {"add_generation_prompt": False, "continue_final_message": True},
    }
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    conflicting = {**body, "chat_template_kwargs": {"continue_final_message": True}}
    assert http.post("/v1/chat/completions", json=conflicting).status_code == 400


def test_too_many_prompts_get_a_400_before_any_work(http):
    too_many = LIMITS.max_prompts_per_request + 1
    response = http.post("/v1/completions", json={"prompt": ["x"] * too_many, "max_tokens": 1})
    assert response.status_code == 400
    assert "--max-prompts-per-request" in response.json()["error"]["message"]


def test_api_docs_are_off_by_default(http):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert http.get(path).status_code == 404


def test_api_docs_when_enabled_are_behind_the_key(engine, tiny_model):
    app = build_app(engine, settings(tiny_model, api_key=API_KEY, enable_api_docs=True), shutdown_engine=False)
    with BackgroundServer(app) as server:
        assert httpx.get(f"{server.base_url}/openapi.json").status_code == 401
        headers = {"Authorization": f"Bearer {API_KEY}"}
        schema = httpx.get(f"{server.base_url}/openapi.json", headers=headers)
        assert schema.status_code == 200 and "/v1/completions" in schema.json()["paths"]
        assert httpx.get(f"{server.base_url}/docs", headers=headers).status_code == 200
        assert httpx.get(f"{server.base_url}/health").status_code == 200


def test_the_key_is_checked_before_the_body(secured_server):
    oversized = b"x" * (LIMITS.max_request_body_bytes + 1)
    url = f"{secured_server.base_url}/v1/completions"
    assert httpx.post(url, content=oversized).status_code == 401
    with_key = httpx.post(url, content=oversized, headers={"Authorization": f"Bearer {API_KEY}"})
    assert with_key.status_code == 413
    for path in ("/v1/../v1/models", "//v1/models", "/V1/models", "/v1/models/", "/tokenize"):
        assert httpx.get(f"{secured_server.base_url}{path}").status_code == 401, path


def aborted_count(http) -> float:
    match = re.search(r"^pagedllm:request_aborted_total (\S+)$", http.get("/metrics").text, re.MULTILINE)
    return float(match.group(1))


def test_aborted_requests_are_counted(http, server, engine):
    before = aborted_count(http)
    body = {"prompt": "Hello", "max_tokens": 200, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
    wait_until_idle(engine)
    deadline = time.monotonic() + 5
    while aborted_count(http) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert aborted_count(http) == before + 1


class SecretFailureEngine(FakeEngine):
    def add_core_request(self, request_id, prompt_token_ids, sampling_params) -> None:
        raise RuntimeError("cannot open /srv/secret/weights.bin for user alice")


class GatedFakeEngine(FakeEngine):
    """Steps only while ``gate`` is set."""

    def __init__(self):
        super().__init__()
        self.step_gate = threading.Event()


def fake_app(fake: FakeEngine, **limits):
    settings = ServerSettings(
        served_model_names=[MODEL_NAME], model_source="fake", limits=ServerLimits(request_timeout=30, **limits)
    )
    return build_app(AsyncLLMEngine(fake), settings)


def test_a_500_carries_no_internal_text_and_names_the_request_id(caplog):
    with BackgroundServer(fake_app(SecretFailureEngine())) as server, caplog.at_level(logging.ERROR):
        response = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": [1], "max_tokens": 2})
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert "secret" not in message and "RuntimeError" not in message
    request_id = response.headers["x-request-id"]
    assert request_id in message
    assert any(request_id in record.getMessage() and record.exc_info for record in caplog.records)


def test_a_full_queue_answers_429_with_retry_after():
    fake = GatedFakeEngine()
    app = fake_app(fake, max_num_waiting_requests=2)
    with BackgroundServer(app) as server:
        url = f"{server.base_url}/v1/completions"

        def send(results: list):
            results.append(httpx.post(url, json={"prompt": [1], "max_tokens": 2}, timeout=30))

        waiting: list = []
        threads = [threading.Thread(target=send, args=(waiting,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(app.state.server.in_flight) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = httpx.post(url, json={"prompt": [1], "max_tokens": 2}, timeout=30)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        fake.step_gate.set()
        for thread in threads:
            thread.join()
        assert [response.status_code for response in waiting] == [200, 200]
        assert httpx.post(url, json={"prompt": [1], "max_tokens": 2}, timeout=30).status_code == 200


def test_one_access_log_line_per_request_with_status_tokens_and_latency(http, caplog):
    with caplog.at_level(logging.INFO, logger="pagedllm.access"):
        response = http.post("/v1/completions", json={"prompt": [5, 6, 7], "max_tokens": 4, "ignore_eos": True},
                             headers={"X-Request-Id": "client-chosen-42"})
        http.get("/health")
        # An empty response can reach the client before its line is written: give the line a moment.
        deadline = time.monotonic() + 5
        while not any("/health" in record.getMessage() for record in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert response.headers["x-request-id"] == "client-chosen-42"
    lines = [record.getMessage() for record in caplog.records if record.name == "pagedllm.access"]
    (completion,) = [line for line in lines if "/v1/completions" in line]
    assert re.search(r'"POST /v1/completions" 200 in=3 out=4 \d+\.\d{3}s$', completion), completion
    assert any('"GET /health" 200 in=0 out=0' in line for line in lines)
    (record,) = [r for r in caplog.records if r.name == "pagedllm.access" and "/v1/completions" in r.getMessage()]
    assert record.request_id == "client-chosen-42"


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_return_tokens_as_token_ids(http, endpoint):
    if endpoint == "completions":
        body = {"prompt": [5, 6], "max_tokens": 3, "logprobs": 2, "return_tokens_as_token_ids": True}
        logprobs = http.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
        tokens = logprobs["tokens"] + [key for top in logprobs["top_logprobs"] for key in top]
    else:
        body = {**CHAT, "logprobs": True, "top_logprobs": 2, "return_tokens_as_token_ids": True}
        content = http.post("/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]["content"]
        tokens = [entry["token"] for entry in content] + [top["token"] for e in content for top in e["top_logprobs"]]
        assert all(entry["bytes"] == list(entry["token"].encode()) for entry in content)
    assert len(tokens) >= 3 and all(re.fullmatch(r"token_id:\d+", token) for token in tokens), tokens

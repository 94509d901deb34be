"""Clients that go away, time out, or outlive the engine: their requests end and free their blocks."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.server.app import build_app
from pagedllm_core.server.background import BackgroundServer
from pagedllm_core.server.settings import ServerLimits, ServerSettings
from tests.server.conftest import MODEL_NAME, wait_until_idle
from tests.server.fake_engine import FakeEngine

LONG = {"prompt": "Hello", "max_tokens": 200, "ignore_eos": True}


def test_abandoned_streams_free_every_block(server, engine):
    async def abandon(http: httpx.AsyncClient, path: str, body: dict) -> None:
        async with http.stream("POST", path, json={**body, "stream": True}) as response:
            lines = response.aiter_lines()
            while not (await anext(lines)).startswith("data: {"):
                pass
            # leaving the block closes the connection mid-stream

    async def main():
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 200, "ignore_eos": True}
            await asyncio.gather(
                *(abandon(http, "/v1/completions", {**LONG, "n": 2}) for _ in range(6)),
                *(abandon(http, "/v1/chat/completions", chat) for _ in range(6)),
            )

    asyncio.run(main())
    wait_until_idle(engine)


class SlowFakeEngine(FakeEngine):
    """A fake engine whose steps take 10 ms, so that a 10,000-token request would run 100 s."""

    max_model_len = 20_000  # room for those 10,000 tokens: the server checks prompt + max_tokens

    def step_core(self):
        time.sleep(0.01)
        return super().step_core()


@pytest.fixture
def fake_server():
    fake = SlowFakeEngine()
    engine = AsyncLLMEngine(fake)
    settings = ServerSettings(
        served_model_names=[MODEL_NAME], model_source="fake", limits=ServerLimits(request_timeout=1.0)
    )
    with BackgroundServer(build_app(engine, settings)) as server:
        yield server, engine, fake


def test_a_closed_stream_aborts_at_once(fake_server):
    server, engine, fake = fake_server
    body = {"prompt": [1, 2], "max_tokens": 10_000, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=10) as response:
        next(response.iter_lines())
    wait_until_idle(engine, timeout=2)
    assert not fake.requests


def test_a_non_streaming_client_that_leaves_aborts_its_request(fake_server):
    server, engine, _ = fake_server
    body = {"prompt": [1, 2], "max_tokens": 10_000}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=0.3)
    wait_until_idle(engine, timeout=2)


def test_request_timeout_answers_504_and_aborts(fake_server):
    server, engine, _ = fake_server
    response = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": [1], "max_tokens": 10_000}, timeout=10)
    assert response.status_code == 504 and response.json()["error"]["type"] == "timeout_error"
    wait_until_idle(engine, timeout=2)
    events = []
    body = {"prompt": [1], "max_tokens": 10_000, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=10) as response:
        events = [line for line in response.iter_lines() if line]
    assert '"timeout_error"' in events[-2] and events[-1] == "data: [DONE]"
    wait_until_idle(engine, timeout=2)
    assert httpx.get(f"{server.base_url}/health").status_code == 200


def test_a_dead_engine_fails_health_and_requests_without_hanging(fake_server):
    server, engine, fake = fake_server
    url = server.base_url
    stream_lines: list[str] = []

    def stream_until_death():
        body = {"prompt": [1], "max_tokens": 10_000, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=10) as response:
            stream_lines.extend(line for line in response.iter_lines() if line)

    reader = threading.Thread(target=stream_until_death)
    reader.start()
    while not engine.stats().num_running_requests:
        time.sleep(0.01)
    fake.fail_next_step = True
    reader.join(timeout=10)
    assert not reader.is_alive() and '"service_unavailable"' in stream_lines[-2]

    health = httpx.get(f"{url}/health")
    assert health.status_code == 503 and "injected step failure" in health.json()["error"]["message"]
    for path, body in [
        ("/v1/completions", {"prompt": [1], "max_tokens": 3}),
        ("/v1/completions", {"prompt": [1], "max_tokens": 3, "stream": True}),
    ]:
        response = httpx.post(f"{url}{path}", json=body, timeout=10)
        assert response.status_code == 503 and response.json()["error"]["type"] == "service_unavailable"
    metrics = httpx.get(f"{url}/metrics").text
    assert "pagedllm:engine_healthy 0.0" in metrics

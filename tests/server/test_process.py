"""``pagedllm serve`` as a process: it exits when the engine dies and drains cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.server.app import build_app
from pagedllm_core.server.process import PagedLLMServer
from pagedllm_core.server.process_control import wait_until_healthy
from pagedllm_core.server.settings import ServerSettings
from tests.server.conftest import MODEL_NAME
from tests.server.fake_engine import FakeEngine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_in_thread(fake: FakeEngine, keep_serving: bool) -> tuple[PagedLLMServer, threading.Thread, str]:
    app = build_app(AsyncLLMEngine(fake), ServerSettings(served_model_names=[MODEL_NAME], model_source="fake"))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = PagedLLMServer(config, app.state.server, shutdown_timeout=1.0, keep_serving_on_engine_death=keep_serving)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}"


def kill_engine(fake: FakeEngine, url: str) -> None:
    fake.fail_next_step = True
    response = httpx.post(f"{url}/v1/completions", json={"prompt": [1], "max_tokens": 3}, timeout=10)
    assert response.status_code == 503


def test_the_server_stops_when_the_engine_dies():
    fake = FakeEngine()
    server, thread, url = serve_in_thread(fake, keep_serving=False)
    kill_engine(fake, url)
    thread.join(timeout=5)
    assert not thread.is_alive() and server.engine_died


def test_a_flag_keeps_it_serving_503_after_engine_death():
    fake = FakeEngine()
    server, thread, url = serve_in_thread(fake, keep_serving=True)
    try:
        kill_engine(fake, url)
        time.sleep(1.5)  # three watchdog rounds
        assert thread.is_alive() and server.engine_died
        assert httpx.get(f"{url}/health").status_code == 503
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def long_context_model(tiny_model_dir):
    return tiny_model_dir("LlamaForCausalLM", max_position_embeddings=4096)


def start_serve(model: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", str(model), "--port", str(port),
        "--max-model-len", "4096", "--served-model-name", MODEL_NAME, *flags,
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(process, url, 120)
    return process, url


async def stream_completion(http: httpx.AsyncClient, started: asyncio.Event) -> tuple[list[str], list[str]]:
    """(finish reasons, raw event lines) of one long streamed completion."""
    body = {"prompt": "Hello", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    reasons, lines = [], []
    async with http.stream("POST", "/v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line:
                continue
            lines.append(line)
            started.set()
            if line.startswith("data: {"):
                event = json.loads(line.removeprefix("data: "))
                reasons += [choice["finish_reason"] for choice in event.get("choices", []) if choice.get("finish_reason")]
    return reasons, lines


async def whole_completion(http: httpx.AsyncClient) -> dict:
    body = {"prompt": "Hello", "max_tokens": 4000, "ignore_eos": True}
    return (await http.post("/v1/completions", json=body)).json()


def test_sigterm_under_load_drains_within_the_deadline_and_exits_0(long_context_model):
    process, url = start_serve(long_context_model, "--shutdown-timeout", "2")
    try:

        async def main():
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                started = [asyncio.Event() for _ in range(8)]
                streams = [asyncio.create_task(stream_completion(http, event)) for event in started]
                wholes = [asyncio.create_task(whole_completion(http)) for _ in range(4)]
                for event in started:
                    await event.wait()
                await asyncio.sleep(0.3)
                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                with pytest.raises(httpx.TransportError):  # the listening socket is closed
                    await http.post("/v1/completions", json={"prompt": "x"})
                return await asyncio.gather(*streams), await asyncio.gather(*wholes), signalled

        streams, wholes, signalled = asyncio.run(main())
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - signalled < 2 + 8
        for reasons, lines in streams:
            assert reasons == ["abort"] and lines[-1] == "data: [DONE]", lines[-3:]
        for response in wholes:
            assert response["choices"][0]["finish_reason"] == "abort", response
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.communicate()[1]
    access = [line for line in stderr.splitlines() if "pagedllm.access" in line]
    assert len(access) >= 12, stderr[-3000:]
    # Every line has a timestamp and a request id; the access log gives status, tokens and latency.
    assert all(line[:4].isdigit() and "[" in line for line in access)
    assert any('"POST /v1/completions" 200 in=' in line and " out=" in line for line in access)

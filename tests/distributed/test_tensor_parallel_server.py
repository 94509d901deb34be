"""``pagedllm serve --tensor-parallel-size 2`` when a rank dies: the request in flight fails with an
error, /health turns 503, and when the server stops no worker process is left."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from pagedllm_core.server.process_control import wait_until_healthy
from tests.distributed.test_tensor_parallel import free_port, wait_gone


def spawned_children(pid):
    """Worker processes the server spawned (multiprocessing's spawn children)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if parent == pid and b"spawn_main" in command:
            children.append(int(stat.parent.name))
    return sorted(children)


def test_a_killed_rank_fails_the_stream_turns_health_503_and_leaves_no_process(tiny_model_dir):
    port = free_port()
    command = [
        sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", str(tiny_model_dir("LlamaForCausalLM")),
        "--port", str(port), "--dtype", "float32", "--tensor-parallel-size", "2", "--keep-serving-on-engine-death",
    ]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(server, url, 180)
        workers = spawned_children(server.pid)
        assert len(workers) == 2
        body = {"model": str(tiny_model_dir("LlamaForCausalLM")), "prompt": "Hello", "max_tokens": 400,
                "ignore_eos": True, "stream": True}  # fmt: skip
        events = []
        with httpx.Client(base_url=url, timeout=60) as http:
            with http.stream("POST", "/v1/completions", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        events.append(json.loads(line.removeprefix("data: ")))
                        if len(events) == 3:
                            subprocess.run(["kill", "-KILL", str(workers[-1])], check=True)
            finish_reasons = [c.get("finish_reason") for event in events for c in event.get("choices", [])]
            assert "length" not in finish_reasons
            assert any("error" in event for event in events), events[-2:]
            deadline = time.monotonic() + 30
            while http.get("/health").status_code != 503 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert http.get("/health").status_code == 503
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert wait_gone(workers) == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

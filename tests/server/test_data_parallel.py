"""Data-parallel serving: two replicas of a tiny model behind one endpoint.

The in-process tests share one two-replica front; the test that kills its workers runs last. The
``pagedllm serve --data-parallel-size 2`` process tests are slow (each loads two replicas).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pagedllm_core.bench.soak import free_port
from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ConfigError
from pagedllm_core.server.app import build_app
from pagedllm_core.server.background import BackgroundServer
from pagedllm_core.server.cli import add_serve_arguments, engine_config_from_serve_args, server_settings_from_args
from pagedllm_core.server.data_parallel import DataParallelEngine, replica_configs
from pagedllm_core.server.process_control import stop_process, wait_until_healthy
from tests.server.conftest import settings

PREFIX = list(range(100, 164))  # 64 tokens: four full 16-token blocks


def engine_config(model) -> EngineConfig:
    # As the conftest's single engine, so that the two serve the same model the same way.
    return EngineConfig(model=str(model), num_kv_blocks=256, max_num_seqs=64, max_model_len=256)


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, ...); None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def process_gone(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is None or stat[0] == "Z"  # a zombie has exited; only its parent's reaping is left


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


@pytest.fixture(scope="module")
def dp_engine(tiny_model):
    engine = DataParallelEngine.from_config(engine_config(tiny_model), 2)
    pids = [pid for replica in engine.replicas for pid in replica.worker_pids]
    yield engine
    engine.shutdown()
    assert all(process_gone(pid) for pid in pids)


@pytest.fixture(scope="module")
def dp_server(dp_engine, tiny_model):
    with BackgroundServer(build_app(dp_engine, settings(tiny_model), shutdown_engine=False)) as server:
        yield server


@pytest.fixture
def dp_http(dp_server):
    with httpx.Client(base_url=dp_server.base_url, timeout=60) as http:
        yield http


def replica_metric(text: str, name: str) -> dict[int, float]:
    """``{replica index: value}`` of one per-replica family in a /metrics page."""
    pattern = re.compile(rf'^pagedllm:{name}\{{engine="(\d+)"\}} (\S+)$', re.MULTILINE)
    return {int(index): float(value) for index, value in pattern.findall(text)}


def test_each_replica_gets_its_own_worker_process_and_share_of_the_cores(dp_engine, tiny_model):
    pids = [replica.worker_pids for replica in dp_engine.replicas]
    assert len(pids) == 2 and all(len(p) == 1 for p in pids) and pids[0] != pids[1]
    configs = replica_configs(engine_config(tiny_model), 2)
    assert all(config.distributed_executor_backend == "mp" for config in configs)
    assert all(config.num_cpu_threads == max(1, len(os.sched_getaffinity(0)) // 2) for config in configs)
    three_threads = engine_config(tiny_model).model_copy(update={"num_cpu_threads": 3})
    assert [config.num_cpu_threads for config in replica_configs(three_threads, 2)] == [3, 3]


def test_greedy_outputs_equal_a_single_engine_servers(dp_http, http):
    prompts = [[5, 6, 7], PREFIX + [1], PREFIX[:20] + [9, 9], list(range(300, 340)), [42] * 17]
    body = {"prompt": prompts, "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    single = http.post("/v1/completions", json=body).json()["choices"]
    replicated = dp_http.post("/v1/completions", json=body).json()["choices"]
    assert [c["text"] for c in replicated] == [c["text"] for c in single]
    # One request at a time, through the stream, too.
    for prompt in prompts:
        one = {"prompt": prompt, "max_tokens": 8, "temperature": 0}
        expected = http.post("/v1/completions", json=one).json()["choices"][0]["text"]
        with dp_http.stream("POST", "/v1/completions", json={**one, "stream": True}) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        assert "".join(event["choices"][0]["text"] for event in events) == expected


def test_a_shared_prefix_lands_on_one_replica_with_prefix_cache_hits(dp_http, dp_engine):
    routed_before = [replica.num_routed for replica in dp_engine.replicas]
    before = dp_http.get("/metrics").text

    def complete(suffix: int) -> dict:
        body = {"prompt": PREFIX + [suffix, suffix + 1], "max_tokens": 4, "temperature": 0}
        return dp_http.post("/v1/completions", json=body).json()

    complete(0)  # computes the prefix; the 16 below find it cached
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(complete, range(1, 17)))
    assert all(response["choices"][0]["finish_reason"] == "length" for response in responses)

    routed = [replica.num_routed - before for replica, before in zip(dp_engine.replicas, routed_before)]
    assert sorted(routed) == [0, 17], routed
    owner = routed.index(17)
    after = dp_http.get("/metrics").text
    queries = replica_metric(after, "dp_prefix_cache_queries_total")[owner] - replica_metric(
        before, "dp_prefix_cache_queries_total"
    ).get(owner, 0)
    hits = replica_metric(after, "dp_prefix_cache_hits_total")[owner] - replica_metric(
        before, "dp_prefix_cache_hits_total"
    ).get(owner, 0)
    assert hits >= 16 * 64 and hits / queries > 0.8, (queries, hits)
    assert replica_metric(after, "dp_prefix_cache_hit_rate")[owner] > 0
    assert replica_metric(after, "dp_requests_routed_total")[owner] == dp_engine.replicas[owner].num_routed
    health = dp_http.get("/health").json()
    assert health["status"] == "ok" and health["routing"] == "prefix_aware"
    assert health["replicas"][owner]["prefix_cache_hit_rate"] > 0
    assert all(replica["num_requests_in_flight"] == 0 for replica in health["replicas"])


def test_killing_a_replica_leaves_the_other_serving_and_killing_both_gives_503(dp_http, dp_engine):
    """Runs last: it kills the module's replicas."""
    body = {"prompt": PREFIX + [7], "max_tokens": 180, "ignore_eos": True, "stream": True}
    with dp_http.stream("POST", "/v1/completions", json=body) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
        (victim,) = [replica for replica in dp_engine.replicas if replica.num_in_flight]
        os.kill(victim.worker_pids[0], signal.SIGKILL)
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    # The request in flight ends with the engine-death error, naming the replica.
    assert "error" in events[-1], events[-1]
    assert f"data-parallel replica {victim.index} died" in events[-1]["error"]["message"]

    survivor = dp_engine.replicas[1 - victim.index]
    health = wait_for(lambda: (h := dp_http.get("/health")).json()["status"] == "degraded" and h, what="degraded")
    assert health.status_code == 200
    dead = health.json()["replicas"][victim.index]
    assert dead["alive"] is False and str(victim.worker_pids[0]) in dead["error"]
    # Later requests, this prefix's included, are served by the survivor.
    routed = survivor.num_routed
    for suffix in range(3):
        response = dp_http.post("/v1/completions", json={"prompt": PREFIX + [suffix], "max_tokens": 3})
        assert response.status_code == 200 and response.json()["choices"][0]["finish_reason"] == "length"
    assert survivor.num_routed == routed + 3
    metrics = dp_http.get("/metrics").text
    assert replica_metric(metrics, "dp_replica_healthy") == {victim.index: 0.0, survivor.index: 1.0}
    assert "pagedllm:engine_healthy 1.0" in metrics
    assert process_gone(victim.worker_pids[0])

    os.kill(survivor.worker_pids[0], signal.SIGKILL)
    wait_for(lambda: dp_http.get("/health").status_code == 503, what="503")
    message = dp_http.get("/health").json()["error"]["message"]
    assert "all 2 data-parallel replicas have died" in message
    assert dp_http.post("/v1/completions", json={"prompt": [1, 2], "max_tokens": 2}).status_code == 503
    assert not dp_engine.is_running


def parse_serve(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_data_parallel_size_below_one_is_refused_at_start(tiny_model):
    command = [sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", str(tiny_model), "-dp", "0"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--data-parallel-size must be >= 1 (the number of engine replicas), got 0" in result.stderr
    args = parse_serve(str(tiny_model), "--data-parallel-size", "-2")
    with pytest.raises(ConfigError, match="got -2"):
        server_settings_from_args(args, engine_config_from_serve_args(args))


def test_the_flags_become_server_settings(tiny_model):
    args = parse_serve(str(tiny_model), "-dp", "3", "--data-parallel-routing", "round_robin")
    config = engine_config_from_serve_args(args)
    settings = server_settings_from_args(args, config)
    assert (settings.data_parallel_size, settings.data_parallel_routing) == (3, "round_robin")
    defaults = server_settings_from_args(parse_serve(str(tiny_model)), config)
    assert (defaults.data_parallel_size, defaults.data_parallel_routing) == (1, "prefix_aware")
    with pytest.raises(ConfigError, match="serves generation models"):
        server_settings_from_args(args, config, task="embed")


def start_serve(model, log: Path) -> tuple[subprocess.Popen, str]:
    """``pagedllm serve MODEL -dp 2`` on a free port, its output in ``log`` (shown if it fails to start)."""
    port = free_port()
    command = [
        sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", str(model), "--port", str(port),
        "--num-kv-blocks", "128", "--data-parallel-size", "2",
    ]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, 300, log)
    except RuntimeError:
        stop_process(process, signal.SIGKILL)
        raise
    return process, url


def worker_pids(url: str) -> list[int]:
    replicas = httpx.get(f"{url}/health", timeout=10).json()["replicas"]
    return [pid for replica in replicas for pid in replica["worker_pids"]]


@pytest.mark.slow
def test_serve_process_ends_every_replica_worker_on_sigterm(tiny_model, tmp_path):
    process, url = start_serve(tiny_model, tmp_path / "serve.log")
    try:
        pids = worker_pids(url)
        assert len(pids) == 2 and all(proc_stat(pid)[1] == str(process.pid) for pid in pids)
        response = httpx.post(f"{url}/v1/completions", json={"prompt": PREFIX, "max_tokens": 4}, timeout=60)
        assert response.status_code == 200
    finally:
        status = stop_process(process)
    assert status == 0
    assert all(process_gone(pid) for pid in pids)


@pytest.mark.slow
def test_serve_process_exits_only_when_every_replica_has_died(tiny_model, tmp_path):
    process, url = start_serve(tiny_model, tmp_path / "serve.log")
    try:
        first, second = worker_pids(url)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: httpx.get(f"{url}/health", timeout=10).json()["status"] == "degraded", what="degraded")
        time.sleep(1.0)  # two watchdog rounds: one dead replica of two is not a dead server
        assert process.poll() is None
        response = httpx.post(f"{url}/v1/completions", json={"prompt": [3, 4], "max_tokens": 2}, timeout=60)
        assert response.status_code == 200
        os.kill(second, signal.SIGKILL)
        assert process.wait(timeout=30) != 0
    finally:
        stop_process(process, signal.SIGKILL)
    assert process_gone(first) and process_gone(second)

"""distributed_executor_backend="ray": tensor-parallel ranks as Ray actors give one rank's outputs, a
killed actor fails the step at once and leaves no process, and two Ray nodes in two network
namespaces (two "machines" joined by a veth pair) run one model together."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pagedllm_core import LLM, SamplingParams
from pagedllm_core.errors import ConfigError
from pagedllm_core.executor import ray_executor
from pagedllm_core.executor.base import WorkerDiedError
from tests.distributed.netns import ADDRESSES, SessionProcess, descendants, two_namespaces
from tests.distributed.test_tensor_parallel import token_ids, wait_gone
from tests.engine.greedy_reference import NUM_NEW_TOKENS, PROMPTS

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'pagedllm[ray]'")

RAY = str(Path(sys.executable).parent / "ray")
DRIVER = str(Path(__file__).with_name("netns_driver.py"))
GREEDY = SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)


@pytest.fixture(autouse=True)
def no_runtime_left():
    """A test that fails before its engine shuts down must not hand its Ray runtime to the next one."""
    yield
    if ray.is_initialized():
        ray.shutdown()


def settings(model_dir, **extra):
    # The executor is under test, not the kernels: the torch backend spares each rank the compiled
    # backend's start-up (a build check under a lock that every process on the machine shares).
    return dict(model=str(model_dir), dtype="float32", block_size=4, attention_backend="torch", **extra)


def ray_settings(model_dir, **extra):
    return settings(model_dir, tensor_parallel_size=2, distributed_executor_backend="ray", **extra)


@pytest.fixture
def placement(monkeypatch):
    """Set the placement strategy for the executors this test builds."""
    return lambda strategy: monkeypatch.setenv("PAGEDLLM_RAY_PLACEMENT_STRATEGY", strategy)


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", pytest.param("OPTForCausalLM", marks=pytest.mark.slow)])
def test_two_ray_actors_give_one_ranks_outputs(architecture, tiny_model_dir, monkeypatch):
    directory = tiny_model_dir(architecture)
    expected = token_ids(LLM(**settings(directory)))
    # Keep-alives every 0.2 s instead of every minute: they land between the steps and must not disturb them.
    monkeypatch.setattr(ray_executor, "KEEPALIVE_SECONDS", 0.2)
    before = set(descendants(os.getpid()))
    llm = LLM(**ray_settings(directory))
    executor = llm.llm_engine.executor
    assert ray.is_initialized()  # the executor started a Ray runtime of its own
    pids = executor.worker_pids
    assert len(pids) == 2 and os.getpid() not in pids
    assert token_ids(llm) == expected
    assert token_ids(llm) == expected  # again, from the prefix cache on both ranks
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0
    llm.llm_engine.shutdown()
    assert not ray.is_initialized()  # ... and stopped it
    assert wait_gone(pids) == []
    assert wait_gone(set(descendants(os.getpid())) - before) == []


@pytest.mark.parametrize("rank", [1, pytest.param(0, marks=pytest.mark.slow)])
def test_killing_a_ranks_actor_fails_the_step_at_once_and_leaves_no_process(tiny_model_dir, rank):
    before = set(descendants(os.getpid()))
    llm = LLM(**ray_settings(tiny_model_dir("LlamaForCausalLM")))
    engine = llm.llm_engine
    pids = engine.executor.worker_pids
    engine.add_request("a", "Hello", SamplingParams(max_tokens=200, ignore_eos=True))
    engine.step()
    os.kill(pids[rank], signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(WorkerDiedError, match=f"rank {rank} \\(pid {pids[rank]} "):
        while engine.has_unfinished_requests():
            engine.step()
    assert time.monotonic() - started < 10
    with pytest.raises(WorkerDiedError, match=f"rank {rank}"):  # the broken group runs no further step
        engine.executor.execute_model(None)
    engine.abort_request("a")
    assert engine.kv_cache_stats().num_used_blocks == 0
    engine.shutdown()
    assert wait_gone(pids) == []
    assert wait_gone(set(descendants(os.getpid())) - before) == []


def test_a_placement_the_cluster_cannot_hold_is_refused_at_once_and_a_callers_runtime_is_kept(
    tiny_model_dir, placement, monkeypatch
):
    placement("STRICT_SPREAD")  # two bundles on two nodes: this runtime has one
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match=r"STRICT_SPREAD, but the Ray cluster's 1 node\(s\) can hold 1"):
            LLM(**ray_settings(tiny_model_dir("LlamaForCausalLM")))
        assert time.monotonic() - started < 30
        assert ray.is_initialized()  # the caller's runtime is the caller's to stop
        assert ray.available_resources().get("CPU") == 2  # and no bundle is left reserved
    finally:
        ray.shutdown()


@pytest.mark.parametrize(
    "strategy, extra, message",
    [
        ("PACK", dict(nnodes=2), "leave nnodes at 1"),
        ("SIDEWAYS", {}, "PAGEDLLM_RAY_PLACEMENT_STRATEGY='SIDEWAYS': expected one of PACK, SPREAD"),
    ],
)
def test_settings_the_ray_backend_cannot_take_are_refused_before_ray_starts(
    tiny_model_dir, placement, strategy, extra, message
):
    placement(strategy)
    with pytest.raises(ConfigError, match=message):
        LLM(**ray_settings(tiny_model_dir("LlamaForCausalLM"), **extra))
    assert not ray.is_initialized()


def run_driver(namespaces, engine_settings, env, timeout=300):
    """Run an engine inside the first namespace; its greedy token ids and the addresses of its ranks' nodes."""
    prompts = json.dumps(PROMPTS)
    command = [*namespaces.run_in(0), sys.executable, DRIVER, json.dumps(engine_settings), prompts, str(NUM_NEW_TOKENS)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def greedy_ids(model_dir):
    llm = LLM(**settings(model_dir))
    return [list(output.outputs[0].token_ids) for output in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]


@pytest.mark.slow
def test_two_ray_nodes_in_two_network_namespaces_run_one_model(tiny_model_dir, tmp_path):
    """A Ray head in one namespace, a Ray worker node in the other, the engine driving from the first
    with one rank on each node (STRICT_SPREAD): the ranks' gloo traffic can only cross the veth pair."""
    directory = tiny_model_dir("Qwen2ForCausalLM")
    # Ray's default on a head started by `ray start`: token authentication; the other node and the driver join with it.
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    temp_dir = tempfile.mkdtemp(prefix="pgl-ray-")  # short: Ray's socket paths must fit in 107 bytes
    nodes = []
    with two_namespaces() as namespaces:
        try:
            head = f"{ADDRESSES[0]}:6379"  # the namespaces have ports of their own
            common = ["--block", "--num-cpus", "1", "--disable-usage-stats"]
            nodes.append(SessionProcess(
                [*namespaces.run_in(0), RAY, "start", "--head", "--node-ip-address", ADDRESSES[0], "--port", "6379",
                 "--include-dashboard=false", "--temp-dir", temp_dir, *common], tmp_path / "head.log", env,
            ))  # fmt: skip
            # The worker node retries until the head answers, so both start at once.
            nodes.append(SessionProcess(
                [*namespaces.run_in(1), RAY, "start", "--address", head, "--node-ip-address", ADDRESSES[1], *common],
                tmp_path / "worker.log", env,
            ))  # fmt: skip
            expected = greedy_ids(directory)
            for node in nodes:
                node.wait_for_output("Ray runtime started", timeout=120)
            spread = {"RAY_ADDRESS": head, "RAY_AUTH_MODE": "token", "PAGEDLLM_RAY_PLACEMENT_STRATEGY": "STRICT_SPREAD"}
            reply = run_driver(namespaces, ray_settings(directory), spread)
        finally:
            left = [pid for node in nodes for pid in node.stop()]
            shutil.rmtree(temp_dir, ignore_errors=True)
    assert left == []
    assert sorted(reply["worker_nodes"]) == list(ADDRESSES)  # one rank on each node, in either order
    assert reply["token_ids"] == expected


@pytest.mark.slow
def test_a_headless_node_in_another_network_namespace_joins_without_ray(tiny_model_dir, tmp_path):
    """The same two "machines" through --nnodes 2: node 1 runs --headless in the second namespace and
    meets node 0, the engine in the first, at --master-addr over the veth pair."""
    directory = tiny_model_dir("MistralForCausalLM")
    node = dict(tensor_parallel_size=2, nnodes=2, master_addr=ADDRESSES[0], master_port=29501)
    with two_namespaces() as namespaces:
        headless = SessionProcess(
            [*namespaces.run_in(1), sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", str(directory),
             "--headless", "--dtype", "float32", "--block-size", "4", "--attention-backend", "torch",
             "--tensor-parallel-size", "2", "--nnodes", "2", "--node-rank", "1", "--master-addr", ADDRESSES[0],
             "--master-port", "29501"],
            tmp_path / "node1.log",
        )  # fmt: skip
        try:
            expected = greedy_ids(directory)  # while node 1 loads
            reply = run_driver(namespaces, settings(directory, **node), {})
            assert headless.process.wait(timeout=60) == 0, headless.output()
        finally:
            left = headless.stop()
    assert left == []
    assert reply["token_ids"] == expected

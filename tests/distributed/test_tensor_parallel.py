"""Tensor parallelism over two gloo ranks on this machine: the same outputs as one rank, worker
processes that end with the engine (also when one is killed), and a second "node" that joins headless."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pagedllm_core import LLM, SamplingParams
from pagedllm_core.errors import ConfigError
from pagedllm_core.executor.base import WorkerDiedError
from tests.engine.greedy_reference import ARCHITECTURES, NUM_NEW_TOKENS, PROMPTS

PARAMS = [
    SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True),
    SamplingParams(temperature=0.9, top_p=0.9, seed=11, max_tokens=NUM_NEW_TOKENS, ignore_eos=True),
    SamplingParams(n=2, temperature=1.0, seed=5, max_tokens=NUM_NEW_TOKENS, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True, prompt_logprobs=1),
]


def token_ids(llm, params=PARAMS, prompts=PROMPTS):
    return [[list(c.token_ids) for c in output.outputs] for output in llm.generate(prompts, params, use_tqdm=False)]


def pid_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_exists(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if pid_exists(pid)]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_two_ranks_give_one_ranks_outputs(architecture, tiny_model_dir):
    directory = str(tiny_model_dir(architecture))
    settings = {"model": directory, "dtype": "float32", "block_size": 4}
    expected = token_ids(LLM(**settings))
    llm = LLM(**settings, tensor_parallel_size=2)
    pids = llm.llm_engine.executor.worker_pids
    assert len(pids) == 2 and os.getpid() not in pids
    assert token_ids(llm) == expected
    # A second round reuses the prompts' cached blocks on both ranks and still agrees.
    assert token_ids(llm) == expected
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0
    llm.llm_engine.shutdown()
    assert wait_gone(pids) == []


def test_the_default_models_three_kv_heads_split_over_two_ranks():
    prompts = ["The capital of France is", "def fibonacci(n):", "Three reasons to learn Python are"]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    single = LLM(dtype="float32", quantization="none")
    expected = token_ids(single, params, prompts)
    single.llm_engine.shutdown()
    llm = LLM(dtype="float32", tensor_parallel_size=2)
    assert token_ids(llm, params, prompts) == expected
    llm.llm_engine.shutdown()


def test_killing_a_rank_fails_the_requests_in_flight_and_leaves_no_process(tiny_model_dir):
    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", tensor_parallel_size=2)
    engine = llm.llm_engine
    pids = engine.executor.worker_pids
    engine.add_request("a", "Hello", SamplingParams(max_tokens=200, ignore_eos=True))
    engine.step()
    os.kill(pids[1], signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(WorkerDiedError, match=f"pid {pids[1]}"):
        while engine.has_unfinished_requests():
            engine.step()
    assert time.monotonic() - started < 10
    engine.abort_request("a")
    assert engine.kv_cache_stats().num_used_blocks == 0
    engine.shutdown()
    assert wait_gone(pids) == []


def test_a_split_the_model_cannot_take_is_a_config_error(tiny_model_dir):
    # The tiny Llama has 2 key/value heads: 3 ranks cannot each hold whole query groups.
    with pytest.raises(ConfigError, match="tensor_parallel_size=3"):
        LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", tensor_parallel_size=3)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"enable_lora": True}, "enable_lora"),
        ({"distributed_executor_backend": "uni"}, "one worker per rank"),
        ({"nnodes": 3}, "multiple of nnodes"),
    ],
)
def test_settings_tensor_parallelism_cannot_take_are_refused_before_anything_starts(tiny_model_dir, settings, message):
    with pytest.raises(ConfigError, match=message):
        LLM(model=str(tiny_model_dir("LlamaForCausalLM")), tensor_parallel_size=2, **settings)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_headless_second_node_joins_over_tcp_and_ends_with_the_engine(tiny_model_dir):
    directory = str(tiny_model_dir("Qwen2ForCausalLM"))
    expected = token_ids(LLM(model=directory, dtype="float32", block_size=4))
    port = free_port()
    node = {"tensor_parallel_size": 2, "nnodes": 2, "master_addr": "127.0.0.1", "master_port": port}
    headless = subprocess.Popen(
        [sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", directory, "--headless", "--dtype", "float32",
         "--block-size", "4", "--tensor-parallel-size", "2", "--nnodes", "2", "--node-rank", "1",
         "--master-addr", "127.0.0.1", "--master-port", str(port)],
    )  # fmt: skip
    try:
        llm = LLM(model=directory, dtype="float32", block_size=4, **node)
        assert len(llm.llm_engine.executor.worker_pids) == 1  # rank 0 here, rank 1 on the other "node"
        assert token_ids(llm) == expected
        llm.llm_engine.shutdown()
        assert headless.wait(timeout=30) == 0
    finally:
        if headless.poll() is None:
            headless.kill()
            headless.wait()

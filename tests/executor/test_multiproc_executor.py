"""``distributed_executor_backend="mp"``: a worker process gives the in-process executor's outputs,
and a worker that dies fails the requests in flight at once and leaves no process behind."""

import os
import signal
import time

import pytest

from pagedllm_core import LLM, SamplingParams
from pagedllm_core.executor.base import WorkerDiedError
from tests.engine.greedy_reference import ARCHITECTURES, NUM_NEW_TOKENS, PROMPTS

PARAMS = [
    SamplingParams(temperature=0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True),
    SamplingParams(temperature=0.9, top_p=0.9, seed=11, max_tokens=NUM_NEW_TOKENS, ignore_eos=True),
    SamplingParams(n=2, temperature=1.0, seed=5, max_tokens=NUM_NEW_TOKENS, ignore_eos=True, logprobs=2),
    SamplingParams(temperature=0, repetition_penalty=1.3, logit_bias={7: 3.0}, max_tokens=NUM_NEW_TOKENS),
]


def outputs_of(llm):
    results = llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    return [[(c.token_ids, c.text) for c in output.outputs] for output in results]


def pid_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_worker_process_outputs_equal_the_in_process_executor(architecture, tiny_model_dir):
    directory = str(tiny_model_dir(architecture))
    expected = outputs_of(LLM(model=directory, dtype="float32", block_size=4))
    llm = LLM(model=directory, dtype="float32", block_size=4, distributed_executor_backend="mp")
    (pid,) = llm.llm_engine.executor.worker_pids
    assert pid != os.getpid() and pid_exists(pid)
    assert outputs_of(llm) == expected
    llm.llm_engine.shutdown()
    assert not pid_exists(pid)


def test_a_killed_worker_fails_the_requests_in_flight_and_leaves_no_process(tiny_model_dir):
    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", distributed_executor_backend="mp")
    engine = llm.llm_engine
    (pid,) = engine.executor.worker_pids
    engine.add_request("a", "Hello", SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(WorkerDiedError, match=f"pid {pid}"):
        while engine.has_unfinished_requests():
            engine.step()
    assert time.monotonic() - started < 10
    engine.abort_request("a")
    assert engine.kv_cache_stats().num_used_blocks == 0
    engine.shutdown()
    assert not pid_exists(pid)

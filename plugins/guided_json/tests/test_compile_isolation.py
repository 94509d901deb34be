"""Compiles in worker processes: a regex bomb is killed at the timeout and its memory goes with it."""

from __future__ import annotations

import os
import time

import pytest
from guided_checks import VOCAB_SIZE
from pagedllm_guided_json.backend import OutlinesBackend, OutlinesConstraint

from pagedllm_core.engine.structured_outputs import ConstraintCompiler
from pagedllm_core.registry import PluginKind, Registration, Registry
from pagedllm_core.sampling.constraints import StructuredOutputError
from pagedllm_core.structured_outputs import StructuredOutputsParams
from pagedllm_core.testing import EOS_TOKEN_ID

# Determinizing this needs about 2**23 states: minutes and gigabytes.
REGEX_BOMB = "(a|b)*a(a|b){22}"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def compiler(tiny_tokenizer):
    registry = Registry([Registration(PluginKind.OUTPUT_CONSTRAINT, "outlines", OutlinesBackend, "", "tests")])
    compiler = ConstraintCompiler(
        registry, "outlines", tiny_tokenizer, VOCAB_SIZE, frozenset({EOS_TOKEN_ID}), timeout=60.0,
        max_concurrent_compiles=1, memory_limit_bytes=2 << 30,
    )
    yield compiler
    compiler.close()


def test_a_compile_comes_back_from_the_worker_process(compiler):
    compiled = compiler.compile(StructuredOutputsParams(regex="[0-9]{3}"))
    assert isinstance(compiled, OutlinesConstraint)
    assert compiler.compile(StructuredOutputsParams(regex="[0-9]{3}")) is compiled
    (pid,) = compiler.worker_pids()
    assert pid != os.getpid()


def test_a_regex_bomb_is_killed_at_the_timeout_with_its_memory(compiler):
    compiler.compile(StructuredOutputsParams(regex="a"))  # start the worker outside the timed compile
    (worker_pid,) = compiler.worker_pids()
    rss_before = rss_bytes(os.getpid())
    compiler.timeout = 3.0
    started = time.monotonic()
    with pytest.raises(StructuredOutputError, match="did not compile within 3 s"):
        compiler.compile(StructuredOutputsParams(regex=REGEX_BOMB))
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{worker_pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{worker_pid}"), "the worker that ran the bomb is still alive"
    assert rss_bytes(os.getpid()) - rss_before < 64 << 20
    # The next compile gets a fresh worker.
    compiler.timeout = 60.0
    assert isinstance(compiler.compile(StructuredOutputsParams(regex="b+")), OutlinesConstraint)
    assert compiler.worker_pids() != [worker_pid]


def test_a_compile_over_the_memory_limit_fails_in_the_worker(tiny_tokenizer):
    registry = Registry([Registration(PluginKind.OUTPUT_CONSTRAINT, "outlines", OutlinesBackend, "", "tests")])
    compiler = ConstraintCompiler(
        registry, "outlines", tiny_tokenizer, VOCAB_SIZE, frozenset({EOS_TOKEN_ID}), timeout=120.0,
        max_concurrent_compiles=1, memory_limit_bytes=64 << 20,
    )
    try:
        with pytest.raises(StructuredOutputError, match="memory"):
            compiler.compile(StructuredOutputsParams(regex=REGEX_BOMB))
        assert compiler.worker_pids() == []
    finally:
        compiler.close()

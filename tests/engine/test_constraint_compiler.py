"""Compiling structured-output specs: the backend by name, the cache, shared compiles, the time bound."""

from __future__ import annotations

import threading
import time

import pytest

from pagedllm_core.engine.structured_outputs import ConstraintCompiler
from pagedllm_core.errors import ConfigError
from pagedllm_core.registry import PluginKind, Registration, Registry
from pagedllm_core.sampling.constraints import CompiledConstraint, ConstraintBackend, StructuredOutputError
from pagedllm_core.structured_outputs import StructuredOutputsParams

SPEC = StructuredOutputsParams(json={"type": "object", "properties": {"a": {"type": "integer"}}})


class Compiled(CompiledConstraint):
    def __init__(self, spec):
        self.spec = spec

    def new_state(self):
        raise NotImplementedError("these tests only compile")


class GatedBackend(ConstraintBackend):
    """Counts its compiles; each waits until the test opens ``gate``."""

    gate = threading.Event()
    num_compiles = 0

    def compile(self, spec):
        type(self).num_compiles += 1
        assert self.gate.wait(10)
        return Compiled(spec)


@pytest.fixture
def backend_class():
    class Backend(GatedBackend):
        gate = threading.Event()
        num_compiles = 0

    return Backend


def compiler_for(backend_class, name="gated", timeout=5.0, cache_size=256) -> ConstraintCompiler:
    registry = Registry([Registration(PluginKind.OUTPUT_CONSTRAINT, "gated", backend_class, "", "tests")])
    return ConstraintCompiler(registry, name, None, 32, frozenset({0}), timeout, cache_size, isolate=False)


def test_an_equal_spec_is_compiled_once(backend_class):
    backend_class.gate.set()
    compiler = compiler_for(backend_class)
    first = compiler.compile(SPEC)
    reordered = StructuredOutputsParams(json={"properties": {"a": {"type": "integer"}}, "type": "object"})
    assert compiler.compile(reordered) is first
    assert backend_class.num_compiles == 1


def test_concurrent_requests_for_one_spec_share_one_compile(backend_class):
    compiler = compiler_for(backend_class)
    results = []
    threads = [threading.Thread(target=lambda: results.append(compiler.compile(SPEC))) for _ in range(4)]
    for thread in threads:
        thread.start()
    backend_class.gate.set()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(result is results[0] for result in results)
    assert backend_class.num_compiles == 1


def test_a_compile_past_the_time_bound_is_a_clear_error_and_still_lands_in_the_cache(backend_class):
    compiler = compiler_for(backend_class, timeout=0.05)
    with pytest.raises(StructuredOutputError, match="did not compile within 0.05 s"):
        compiler.compile(SPEC)
    backend_class.gate.set()
    compiler.timeout = 5.0
    assert isinstance(compiler.compile(SPEC), Compiled)
    assert backend_class.num_compiles == 1


def test_the_least_recently_used_spec_is_evicted(backend_class):
    backend_class.gate.set()
    compiler = compiler_for(backend_class, cache_size=2)
    specs = [StructuredOutputsParams(regex=f"a{{{i}}}") for i in range(3)]
    for spec in specs:
        compiler.compile(spec)
    assert [compiler.cached(spec) for spec in specs] == [False, True, True]


def test_a_missing_outlines_backend_names_the_plugin_to_install(backend_class):
    with pytest.raises(ConfigError, match=r"not installed: pip install 'pagedllm\[guided\]'"):
        compiler_for(backend_class, name="outlines").compile(SPEC)


def test_an_unknown_backend_lists_the_registered_ones(backend_class):
    with pytest.raises(ConfigError, match="unknown output constraint 'xgrammar'; available: 'gated'"):
        compiler_for(backend_class, name="xgrammar").compile(SPEC)


def test_a_spec_over_the_size_limit_is_refused(backend_class):
    backend_class.gate.set()
    compiler = ConstraintCompiler(
        Registry([Registration(PluginKind.OUTPUT_CONSTRAINT, "gated", backend_class, "", "tests")]),
        "gated", None, 32, frozenset({0}), 5.0, isolate=False, max_spec_bytes=100,
    )
    with pytest.raises(StructuredOutputError, match="the limit is 100"):
        compiler.compile(StructuredOutputsParams(choice=["x" * 200]))
    assert backend_class.num_compiles == 0


def test_compiles_beyond_the_queue_bound_are_refused(backend_class):
    compiler = ConstraintCompiler(
        Registry([Registration(PluginKind.OUTPUT_CONSTRAINT, "gated", backend_class, "", "tests")]),
        "gated", None, 32, frozenset({0}), 5.0, max_concurrent_compiles=1, isolate=False, max_queued_compiles=2,
    )
    specs = [StructuredOutputsParams(regex=f"a{{{i}}}") for i in range(4)]
    results = []
    threads = [threading.Thread(target=lambda spec=spec: results.append(compiler.compile(spec))) for spec in specs[:3]]

    def wait_until(condition):
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    # One compile runs (gated) and two wait for the worker: the queue is full. The first is started alone, or the
    # others could fill the queue before it leaves it, and one of them be refused instead.
    threads[0].start()
    wait_until(lambda: backend_class.num_compiles == 1)
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: compiler._num_queued == 2)
    with pytest.raises(StructuredOutputError, match="already queued"):
        compiler.compile(specs[3])
    backend_class.gate.set()
    for thread in threads:
        thread.join()
    assert len(results) == 3

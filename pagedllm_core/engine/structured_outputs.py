"""Compiling requests' structured-output specs: the backend by name, a bounded queue, a cache, a time bound."""

from __future__ import annotations

import concurrent.futures
import hashlib
import queue
import threading
from collections import OrderedDict
from typing import Any

from pagedllm_core.engine.compile_worker import CompileWorker, NotPicklable
from pagedllm_core.errors import ConfigError, UnknownPluginTargetError
from pagedllm_core.registry import PluginKind, Registry
from pagedllm_core.sampling.constraints import CompiledConstraint, ConstraintBackend, StructuredOutputError
from pagedllm_core.structured_outputs import StructuredOutputsParams

INSTALL_HINT = "pip install 'pagedllm[guided]' (or pip install -e plugins/guided_json from a checkout)"


class _Slot:
    """Room for one compile at a time; in isolated mode it keeps its worker process between compiles."""

    worker: CompileWorker | None = None


class ConstraintCompiler:
    """Turns specs into compiled constraints for one engine's tokenizer, each spec compiled once.

    The backend named by ``EngineConfig.structured_outputs_backend`` is resolved the first time a
    request asks for structured output, so engines that never do import nothing. Any thread may
    call :meth:`compile`; concurrent calls for one spec share one compilation, a caller waits at
    most ``timeout`` seconds, and compiled constraints are cached by the spec's hash (LRU).

    With ``isolate`` (the default) compiles run in up to ``max_concurrent_compiles`` child
    processes (:class:`~pagedllm_core.engine.compile_worker.CompileWorker`), each with
    ``memory_limit_bytes`` of address space to grow into: one past ``timeout`` is killed with
    its process, so neither its CPU nor its memory outlives the request. The compiled constraint
    comes back pickled; a backend whose constraints do not pickle gets the spec compiled again
    here, which is safe because the child has just shown it fits in time and memory. Without
    ``isolate`` compiles run on daemon threads and one past the bound finishes in the background.

    At most ``max_queued_compiles`` compiles wait for a free worker, and specs larger than
    ``max_spec_bytes`` (as JSON) are refused, both with a :class:`StructuredOutputError`.
    """

    def __init__(
        self,
        registry: Registry,
        backend_name: str,
        tokenizer: Any,
        vocab_size: int,
        eos_token_ids: frozenset[int],
        timeout: float,
        cache_size: int = 256,
        max_concurrent_compiles: int = 2,
        *,
        isolate: bool = True,
        memory_limit_bytes: int | None = 4 << 30,
        max_queued_compiles: int = 32,
        max_spec_bytes: int = 64 << 10,
    ):
        self.registry = registry
        self.backend_name = backend_name
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self.timeout = timeout
        self.cache_size = cache_size
        self.isolate = isolate
        self.memory_limit_bytes = memory_limit_bytes
        self.max_queued_compiles = max_queued_compiles
        self.max_spec_bytes = max_spec_bytes
        self._backend_class: type[ConstraintBackend] | None = None
        self._backend: ConstraintBackend | None = None
        self._lock = threading.Lock()  # guards the cache, the in-flight compilations and the queue count
        self._backend_lock = threading.Lock()  # held while the backend is resolved or built (seconds)
        self._cache: OrderedDict[str, CompiledConstraint] = OrderedDict()
        self._in_flight: dict[str, concurrent.futures.Future] = {}
        self._num_queued = 0
        self._slots: queue.Queue[_Slot] = queue.Queue()
        for _ in range(max_concurrent_compiles):
            self._slots.put(_Slot())

    def compile(self, spec: StructuredOutputsParams) -> CompiledConstraint:
        """The compiled constraint of ``spec``, from the cache or compiled now (waiting at most ``timeout``)."""
        key = self._key(spec)
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
                return compiled
            future = self._in_flight.get(key)
            if future is None:
                if self._num_queued >= self.max_queued_compiles:
                    raise StructuredOutputError(
                        f"{self._num_queued} structured-output compiles are already queued (the limit); retry later"
                    )
                self._num_queued += 1
                future = self._in_flight[key] = concurrent.futures.Future()
                worker = threading.Thread(
                    target=self._compile_into, args=(key, spec, future), name="pagedllm-compile", daemon=True
                )
                worker.start()
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            raise StructuredOutputError(
                f"the {spec.kind} constraint did not compile within {self.timeout:g} s "
                "(structured_outputs_compile_timeout); simplify the schema or regex "
                "(fewer optional fields, bounded repetitions, smaller enums)"
            ) from None

    def cached(self, spec: StructuredOutputsParams) -> bool:
        """Whether ``spec`` is compiled already."""
        with self._lock:
            return self._key(spec) in self._cache

    def compiling(self, spec: StructuredOutputsParams) -> bool:
        """Whether ``spec`` is being compiled now (or waits for a worker)."""
        with self._lock:
            return self._key(spec) in self._in_flight

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def worker_pids(self) -> list[int]:
        """Process ids of the compile workers alive now (none until the first isolated compile)."""
        workers = [slot.worker for slot in list(self._slots.queue)]
        return [worker.pid for worker in workers if worker is not None and worker.alive]

    def close(self) -> None:
        """Stop the idle compile workers (busy ones stop when their compile returns)."""
        while True:
            try:
                slot = self._slots.get_nowait()
            except queue.Empty:
                return
            if slot.worker is not None:
                slot.worker.kill()

    def _key(self, spec: StructuredOutputsParams) -> str:
        text = spec.cache_key()
        if len(text) > self.max_spec_bytes:
            raise StructuredOutputError(
                f"the {spec.kind} constraint is {len(text)} bytes as JSON; the limit is {self.max_spec_bytes}"
            )
        return hashlib.sha256(text.encode()).hexdigest()

    def _compile_into(self, key: str, spec: StructuredOutputsParams, future: concurrent.futures.Future) -> None:
        try:
            slot = self._slots.get()
            with self._lock:
                self._num_queued -= 1
            try:
                compiled = self._compile_in_slot(slot, spec)
            finally:
                self._slots.put(slot)
        except Exception as error:  # noqa: BLE001 - handed to every caller waiting on this spec
            with self._lock:
                del self._in_flight[key]
            future.set_exception(error)
            return
        with self._lock:
            del self._in_flight[key]
            self._cache[key] = compiled
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        future.set_result(compiled)

    def _compile_in_slot(self, slot: _Slot, spec: StructuredOutputsParams) -> CompiledConstraint:
        """Compile on this slot's worker, starting one if the slot has none alive (isolated mode)."""
        if not self.isolate:
            return self._get_backend().compile(spec)
        backend_class = self._get_backend_class()
        if slot.worker is None or not slot.worker.alive:
            slot.worker = CompileWorker(
                backend_class, self.tokenizer, self.vocab_size, self.eos_token_ids, self.memory_limit_bytes
            )
        compiled = slot.worker.compile(spec, self.timeout)
        if isinstance(compiled, NotPicklable):
            compiled = self._get_backend().compile(spec)
        return compiled

    def _get_backend(self) -> ConstraintBackend:
        backend_class = self._get_backend_class()
        with self._backend_lock:
            if self._backend is None:
                self._backend = backend_class(self.tokenizer, self.vocab_size, self.eos_token_ids)
            return self._backend

    def _get_backend_class(self) -> type[ConstraintBackend]:
        with self._backend_lock:
            if self._backend_class is None:
                self._backend_class = self._resolve_backend()
            return self._backend_class

    def _resolve_backend(self) -> type[ConstraintBackend]:
        try:
            return self.registry.resolve(PluginKind.OUTPUT_CONSTRAINT, self.backend_name)
        except UnknownPluginTargetError as error:
            if self.backend_name == "outlines":
                raise ConfigError(
                    "structured outputs need the output-constraint backend 'outlines', which is not installed: "
                    f"{INSTALL_HINT}"
                ) from None
            raise ConfigError(f"structured_outputs_backend: {error}") from None

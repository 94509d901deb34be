"""Compiling requests' structured-output specs: the backend by name, an LRU cache, a time bound."""

from __future__ import annotations

import concurrent.futures
import threading
from collections import OrderedDict
from typing import Any

from pagedllm_core.errors import ConfigError, UnknownPluginTargetError
from pagedllm_core.registry import PluginKind, Registry
from pagedllm_core.sampling.constraints import CompiledConstraint, ConstraintBackend, StructuredOutputError
from pagedllm_core.structured_outputs import StructuredOutputsParams

INSTALL_HINT = "pip install 'pagedllm[guided]' (or pip install -e plugins/guided_json from a checkout)"


class ConstraintCompiler:
    """Turns specs into compiled constraints for one engine's tokenizer, each spec compiled once.

    The backend named by ``EngineConfig.structured_outputs_backend`` is resolved and built the first
    time a request asks for structured output, so engines that never do import nothing. Each new
    spec compiles on its own daemon thread, at most ``max_concurrent_compiles`` at a time so that
    compiles cannot starve the stepping thread of cores: any thread may call :meth:`compile`,
    concurrent calls for one spec share one compilation, and a caller waits at most ``timeout``
    seconds. A compilation past the bound cannot be interrupted (the backends' compilers are native
    code); it finishes in the background and lands in the cache, while the caller gets a
    :class:`StructuredOutputError`. Daemon threads never hold up the process's exit.
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
    ):
        self.registry = registry
        self.backend_name = backend_name
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self.timeout = timeout
        self.cache_size = cache_size
        self._backend: ConstraintBackend | None = None
        self._lock = threading.Lock()  # guards the cache and the in-flight compilations
        self._backend_lock = threading.Lock()  # held while the backend is built (seconds, on a worker)
        self._cache: OrderedDict[str, CompiledConstraint] = OrderedDict()
        self._in_flight: dict[str, concurrent.futures.Future] = {}
        self._compile_slots = threading.Semaphore(max_concurrent_compiles)

    def compile(self, spec: StructuredOutputsParams) -> CompiledConstraint:
        """The compiled constraint of ``spec``, from the cache or compiled now (waiting at most ``timeout``)."""
        key = spec.cache_key()
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
                return compiled
            future = self._in_flight.get(key)
            if future is None:
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
            return spec.cache_key() in self._cache

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _compile_into(self, key: str, spec: StructuredOutputsParams, future: concurrent.futures.Future) -> None:
        try:
            with self._compile_slots:
                compiled = self._get_backend().compile(spec)
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

    def _get_backend(self) -> ConstraintBackend:
        with self._backend_lock:
            if self._backend is None:
                self._backend = self._build_backend()
            return self._backend

    def _build_backend(self) -> ConstraintBackend:
        try:
            backend_class = self.registry.resolve(PluginKind.OUTPUT_CONSTRAINT, self.backend_name)
        except UnknownPluginTargetError as error:
            if self.backend_name == "outlines":
                raise ConfigError(
                    "structured outputs need the output-constraint backend 'outlines', which is not installed: "
                    f"{INSTALL_HINT}"
                ) from None
            raise ConfigError(f"structured_outputs_backend: {error}") from None
        return backend_class(self.tokenizer, self.vocab_size, self.eos_token_ids)

"""A child process that compiles structured-output specs, so that a runaway compile can be killed.

Constraint compilers are native code that cannot be interrupted: a regex like ``(a|b)*a(a|b){22}``
builds an automaton of millions of states for minutes and gigabytes. In a child process it is
stopped for good at its deadline (the process is killed, and its memory goes with it), and an
address-space limit (``RLIMIT_AS``) set in the child makes a compile that outgrows its memory
budget fail there instead of in the server.
"""

from __future__ import annotations

import multiprocessing
import pickle
import resource
from typing import Any

from pagedllm_core.errors import ConfigError
from pagedllm_core.sampling.constraints import CompiledConstraint, StructuredOutputError
from pagedllm_core.structured_outputs import StructuredOutputsParams

# Building the backend (its vocabulary) and starting the process are not the request's compile.
STARTUP_TIMEOUT = 300.0


class NotPicklable:
    """What a worker answers when it compiled the spec but cannot send the result back."""


class CompileWorker:
    """One child process holding its own backend; compiles one spec at a time.

    The backend class is passed by reference (it must be importable), with the tokenizer and vocab
    facts to build it in the child. Children come from a fork server started fresh (never a fork
    of the serving process and its threads) that has imported the backend's module once.
    """

    def __init__(
        self,
        backend_class: type,
        tokenizer: Any,
        vocab_size: int,
        eos_token_ids: frozenset[int],
        memory_limit_bytes: int | None,
    ):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([backend_class.__module__])
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child_conn, backend_class, tokenizer, vocab_size, eos_token_ids, memory_limit_bytes),
            name="pagedllm-compile",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        self._started = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def compile(self, spec: StructuredOutputsParams, timeout: float) -> CompiledConstraint | NotPicklable:
        """The compiled ``spec``; kills this worker and raises :class:`StructuredOutputError` past ``timeout``."""
        if not self._started:
            self._receive(STARTUP_TIMEOUT, "start")
            self._started = True
        try:
            self._conn.send(spec)
        except OSError:  # the worker died since its last compile (killed from outside)
            self.kill()
            raise StructuredOutputError("the constraint compile worker stopped; send the request again") from None
        kind, payload = self._receive(timeout, "compile")
        if kind == "not_picklable":
            return NotPicklable()
        return pickle.loads(payload)

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._conn.close()

    def _receive(self, timeout: float, what: str) -> tuple[str, Any]:
        if not self._conn.poll(timeout):
            self.kill()
            raise StructuredOutputError(
                f"the constraint did not {what} within {timeout:g} s (structured_outputs_compile_timeout); "
                "simplify the schema or regex (fewer optional fields, bounded repetitions, smaller enums)"
            )
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise StructuredOutputError(
                "the constraint compiler ran out of its memory limit (or crashed); simplify the schema or regex"
            ) from None
        if kind == "error":
            raise payload
        return kind, payload


def _serve(conn, backend_class, tokenizer, vocab_size, eos_token_ids, memory_limit_bytes) -> None:
    """The child: build the backend, cap memory, then compile specs until the parent goes away."""
    try:
        backend = backend_class(tokenizer, vocab_size, eos_token_ids)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", _sendable(error)))
        return
    if memory_limit_bytes is not None:
        _limit_address_space(memory_limit_bytes)
    conn.send(("ready", None))
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        try:
            compiled = backend.compile(spec)
        except MemoryError:
            conn.send(("error", StructuredOutputError("the constraint needs more memory than its compile limit")))
            continue
        except Exception as error:  # noqa: BLE001 - the request's error, sent back
            conn.send(("error", _sendable(error)))
            continue
        try:
            payload = pickle.dumps(compiled)
        except Exception:  # noqa: BLE001 - the parent compiles it itself, knowing it fits in time and memory
            conn.send(("not_picklable", None))
        else:
            conn.send(("compiled", payload))


def _limit_address_space(num_bytes: int) -> None:
    """Let this process grow by at most ``num_bytes`` of address space beyond what it maps now."""
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + num_bytes, mapped + num_bytes))


def _sendable(error: Exception) -> Exception:
    """The error as the parent can unpickle it: config errors as they are, anything else as its text."""
    if isinstance(error, ConfigError):
        return error
    return StructuredOutputError(f"the constraint could not be compiled: {type(error).__name__}: {error}")

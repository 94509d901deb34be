"""The async engine: a step thread runs an ``LLMEngine``'s core, an output thread makes its outputs.

The step thread is the only code that touches the engine's core (scheduler, executor, sequences).
Callers talk to it through a command queue (add / abort / stop) and read their outputs from a
per-request :class:`RequestStream` fed with ``call_soon_threadsafe``. After each step the core's
token-id outputs go to the output thread, which owns the engine's :class:`OutputProcessor`:
detokenization, stop strings and logprob text happen there, beside the next step's forward pass,
and a stop string found there goes back to the step thread as a command. Everything that crosses
between the sides (token ids, ``SamplingParams``, core and request outputs) is plain picklable data,
so the step thread can later become a separate process without changing the callers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

from pagedllm_core.engine.core_outputs import EngineCoreOutput
from pagedllm_core.engine.output_processor import OutputProcessor
from pagedllm_core.errors import PagedLLMError, RequestFailedError
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.outputs import RequestOutput
from pagedllm_core.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams
from pagedllm_core.structured_outputs import StructuredOutputsParams

logger = logging.getLogger(__name__)


class EngineDeadError(PagedLLMError):
    """The engine loop has stopped (it failed or was shut down), so no request can be served."""


class SteppableEngine(Protocol):
    """What the async engine needs from ``LLMEngine`` (tests substitute a fake)."""

    tokenizer: Any
    max_model_len: int
    output_processor: OutputProcessor

    def add_core_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams | BeamSearchParams,
        lora_request: LoRARequest | None = None,
    ) -> None: ...

    def abort_core_requests(self, request_ids: list[str]) -> list[EngineCoreOutput]: ...

    def finish_stopped_sequences(self, stopped: list[tuple[str, int, str]]) -> None: ...

    def step_core(self) -> list[EngineCoreOutput]: ...

    def precompile_structured_output(self, spec: StructuredOutputsParams) -> None: ...

    def has_unfinished_requests(self) -> bool: ...

    def shutdown(self) -> None: ...

    def kv_cache_stats(self) -> Any: ...

    def prefix_cache_stats(self) -> Any: ...

    spec_decode_stats: Any  # speculative decoding counters (SpecDecodeStats)

    @property
    def num_running_requests(self) -> int: ...

    @property
    def num_waiting_requests(self) -> int: ...


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's load, taken by the step thread after every iteration."""

    num_running_requests: int = 0
    num_waiting_requests: int = 0
    num_used_blocks: int = 0
    num_blocks: int = 0
    num_prefix_cache_queries: int = 0  # tokens looked up in the prefix cache since start
    num_prefix_cache_hits: int = 0  # of those, tokens found cached
    # Speculative decoding since start: verifying sequence steps, drafts proposed, drafts accepted.
    num_spec_decode_drafts: int = 0
    num_spec_decode_draft_tokens: int = 0
    num_spec_decode_accepted_tokens: int = 0

    @property
    def kv_cache_usage(self) -> float:
        return self.num_used_blocks / self.num_blocks if self.num_blocks else 0.0


class RequestStream:
    """The outputs of one request, read with ``async for`` by the task that added it.

    A consumer that falls behind receives what it missed at once: the newest output when outputs
    are cumulative, the outputs folded together when they are deltas (``RequestOutputKind.DELTA``).
    Closing the stream (``close()`` or leaving ``with stream:``) before the request finished aborts
    it, which frees its KV blocks on the step thread's next iteration.
    """

    def __init__(self, request_id: str, engine: AsyncLLMEngine, deltas: bool = False):
        self.request_id = request_id
        self.loop = asyncio.get_running_loop()
        self.finished = False
        self._engine = engine
        self._deltas = deltas
        self._queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()

    def push(self, item: RequestOutput | BaseException) -> None:
        """Called on the stream's event loop (via ``call_soon_threadsafe``)."""
        self._queue.put_nowait(item)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        while not isinstance(item, BaseException) and not item.finished and not self._queue.empty():
            later = self._queue.get_nowait()
            if self._deltas and not isinstance(later, BaseException):
                item.add(later)
            else:
                item = later
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        self.finished = item.finished
        return item

    def close(self) -> None:
        if not self.finished:
            self.finished = True
            self._engine.abort(self.request_id)

    def __enter__(self) -> RequestStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass
class _Add:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams | BeamSearchParams
    stream: RequestStream
    accepted: concurrent.futures.Future
    lora_request: LoRARequest | None = None


@dataclass
class _Call:
    """Run ``function(engine)`` on the step thread (between steps); its result or error goes to ``done``."""

    function: Any
    done: concurrent.futures.Future


@dataclass
class _Abort:
    request_ids: list[str]


@dataclass
class _FinishStopped:
    """From the output thread: sequences that reached a stop string, and requests whose output failed."""

    stopped: list[tuple[str, int, str]]
    failed: list[str]


class _Stop:
    pass


@dataclass
class _Track:
    """To the output thread: a request the core accepted, ahead of any of its core outputs."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams | BeamSearchParams
    stream: RequestStream


@dataclass
class _Close:
    """To the output thread: the engine is gone; end every open stream with ``error`` and exit."""

    error: EngineDeadError


class AsyncLLMEngine:
    """Serves many concurrent asyncio callers from one ``LLMEngine`` stepped on a background thread.

    ``add_request`` tokenizes text prompts and compiles structured-output constraints in worker
    threads (never on the step thread, so other requests keep flowing), waits for
    the engine to accept or reject the request (a rejection raises the engine's ``ConfigError``)
    and returns the request's :class:`RequestStream`. If the loop dies, ``/health``-style checks
    see :meth:`check_health` raise and every open or new request gets :class:`EngineDeadError`.
    A beam search is a request like any other: its beams are stepped beside the other requests.
    """

    def __init__(self, engine: SteppableEngine):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.max_model_len
        self._commands: queue.SimpleQueue[_Add | _Call | _Abort | _FinishStopped | _Stop] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders "submit a command" against "the loop has died"
        self._dead_error: EngineDeadError | None = None
        self._outputs: queue.SimpleQueue[_Track | list[EngineCoreOutput] | _Close] = queue.SimpleQueue()
        self._streams: dict[str, RequestStream] = {}  # output thread only
        self._stats = self._snapshot()
        self._output_thread = threading.Thread(
            target=self._run_output_loop, name="pagedllm-output-loop", daemon=True
        )
        self._output_thread.start()
        self._thread = threading.Thread(target=self._run, name="pagedllm-engine-loop", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config) -> AsyncLLMEngine:
        """Load the model for ``config`` (an ``EngineConfig``) and start stepping it."""
        from pagedllm_core.engine.llm_engine import LLMEngine

        return cls(LLMEngine(config))

    # -- the caller's side ----------------------------------------------------------------------

    async def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | BeamSearchParams,
        lora_request: LoRARequest | None = None,
    ) -> RequestStream:
        """Queue a request (a beam search with :class:`BeamSearchParams`, through a LoRA adapter with
        ``lora_request``); returns its stream once the engine has accepted it."""
        if isinstance(prompt, str):
            prompt_token_ids = await asyncio.to_thread(self.tokenizer.encode, prompt)
        else:
            prompt_token_ids = list(prompt)
        await self._precompile(params.structured_outputs)
        deltas = getattr(params, "output_kind", None) is RequestOutputKind.DELTA
        stream = RequestStream(request_id, self, deltas)
        accepted: concurrent.futures.Future = concurrent.futures.Future()
        self._submit(_Add(request_id, prompt_token_ids, params, stream, accepted, lora_request))
        try:
            await asyncio.wrap_future(accepted)
        except asyncio.CancelledError:
            self.abort(request_id)  # in case the engine accepted it just before we were cancelled
            raise
        return stream

    async def beam_search(self, request_id: str, prompt: str | list[int], params: BeamSearchParams) -> RequestOutput:
        """Run beam search for one prompt; the beams, best first, as the outputs of a finished request.

        Cancelling the caller aborts the search (its beams leave the batch on the next step)."""
        with await self.add_request(request_id, prompt, params) as stream:
            async for output in stream:
                if output.finished:
                    return output
        raise EngineDeadError("the beam search ended without a result")

    async def _precompile(self, spec: StructuredOutputsParams | None) -> None:
        """Compile a request's constraint on a worker thread (bounded by the engine's compile timeout)."""
        if spec is not None:
            self.check_health()
            await asyncio.to_thread(self.engine.precompile_structured_output, spec)

    async def add_lora(self, lora_request: LoRARequest) -> bool:
        """Load and check an adapter between steps (``ConfigError`` when unusable); False if loaded already."""
        return await self._call(lambda engine: engine.add_lora(lora_request))

    async def remove_lora(self, lora_int_id: int) -> bool:
        """Drop an adapter from memory between steps; requests running with it reload it."""
        return await self._call(lambda engine: engine.remove_lora(lora_int_id))

    async def _call(self, function):
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._submit(_Call(function, done))
        return await asyncio.wrap_future(done)

    def abort(self, request_ids: str | list[str]) -> None:
        """Abort these requests (unknown or finished ids are ignored); returns at once."""
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        try:
            self._submit(_Abort(ids))
        except EngineDeadError:
            pass  # a dead engine holds no requests

    def stats(self) -> EngineStats:
        return self._stats

    @property
    def is_running(self) -> bool:
        return self._dead_error is None

    def check_health(self) -> None:
        """Raise :class:`EngineDeadError` if the loop has stopped."""
        if self._dead_error is not None:
            raise EngineDeadError(str(self._dead_error))

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the loop after its current step, then the engine's workers; open streams get
        :class:`EngineDeadError`."""
        try:
            self._submit(_Stop())
        except EngineDeadError:
            pass
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._output_thread.join(timeout)
            self.engine.shutdown()

    def _submit(self, command: _Add | _Call | _Abort | _FinishStopped | _Stop) -> None:
        with self._lock:
            self.check_health()
            self._commands.put(command)

    # -- the step thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._apply_commands(wait=not self.engine.has_unfinished_requests()):
                outputs = self.engine.step_core() if self.engine.has_unfinished_requests() else []
                # Stats first, so that a caller who sees its request finish also sees its blocks freed
                # (a stop string frees them one step later, when the output thread's word arrives).
                self._stats = self._snapshot()
                if outputs:
                    self._outputs.put(outputs)
        except BaseException as error:  # any failure must reach every waiting caller
            logger.exception("the engine loop failed")
            self._die(EngineDeadError(f"the engine loop failed: {type(error).__name__}: {error}"))
        else:
            self._die(EngineDeadError("the engine has been shut down"))

    def _apply_commands(self, wait: bool) -> bool:
        """Run the queued commands (blocking for the first one when idle); False once told to stop."""
        try:
            command = self._commands.get() if wait else self._commands.get_nowait()
        except queue.Empty:
            return True
        while True:
            if isinstance(command, _Stop):
                return False
            if isinstance(command, _Add):
                self._add(command)
            elif isinstance(command, _Call):
                self._call_function(command)
            elif isinstance(command, _FinishStopped):
                self.engine.finish_stopped_sequences(command.stopped)
                self.engine.abort_core_requests(command.failed)
                self._stats = self._snapshot()
            else:
                self._outputs.put(self.engine.abort_core_requests(command.request_ids))
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _call_function(self, command: _Call) -> None:
        if not command.done.set_running_or_notify_cancel():
            return
        try:
            command.done.set_result(command.function(self.engine))
        except Exception as error:  # noqa: BLE001 - the caller's error (e.g. an unusable adapter), never the loop's
            command.done.set_exception(error)

    def _add(self, command: _Add) -> None:
        if not command.accepted.set_running_or_notify_cancel():
            return  # the caller gave up before we got here
        try:
            if command.lora_request is None:
                self.engine.add_core_request(command.request_id, command.prompt_token_ids, command.params)
            else:
                self.engine.add_core_request(
                    command.request_id, command.prompt_token_ids, command.params, lora_request=command.lora_request
                )
        except Exception as error:  # noqa: BLE001 - a bad request is the caller's error, never the loop's
            command.accepted.set_exception(error)
            return
        self._outputs.put(_Track(command.request_id, command.prompt_token_ids, command.params, command.stream))
        command.accepted.set_result(None)

    # -- the output thread ----------------------------------------------------------------------

    def _run_output_loop(self) -> None:
        processor = self.engine.output_processor
        while True:
            item = self._outputs.get()
            if isinstance(item, _Close):
                self._end_streams(item.error)
                return
            try:
                if isinstance(item, _Track):
                    processor.add_request(item.request_id, None, item.prompt_token_ids, item.params)
                    self._streams[item.request_id] = item.stream
                    continue
                processed = processor.process(item)
            except BaseException as error:  # the processor itself broke: nothing more can be served
                logger.exception("the output loop failed")
                dead = EngineDeadError(f"the output loop failed: {type(error).__name__}: {error}")
                self._die(dead)
                self._end_streams(dead)
                return
            if processed.stopped or processed.failed:
                try:
                    self._submit(_FinishStopped(processed.stopped, processed.failed))
                except EngineDeadError:
                    pass  # the step thread is gone; _Close follows
            self._deliver(processed.outputs)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestStream, Any]]] = defaultdict(list)
        for output in outputs:
            if output.finished:
                stream = self._streams.pop(output.request_id, None)
            else:
                stream = self._streams.get(output.request_id)
            if stream is not None:
                item = output if output.error is None else RequestFailedError(output.error)
                by_loop[stream.loop].append((stream, item))
        for loop, items in by_loop.items():
            _push_threadsafe(loop, items)

    def _snapshot(self) -> EngineStats:
        kv = self.engine.kv_cache_stats()
        prefix = self.engine.prefix_cache_stats()
        spec = self.engine.spec_decode_stats
        return EngineStats(
            self.engine.num_running_requests,
            self.engine.num_waiting_requests,
            kv.num_used_blocks,
            kv.num_blocks,
            prefix.num_queried_tokens,
            prefix.num_hit_tokens,
            spec.num_drafts,
            spec.num_draft_tokens,
            spec.num_accepted_tokens,
        )

    def _die(self, error: EngineDeadError) -> None:
        """Refuse new commands, fail the queued adds and tell the output thread to end every stream."""
        with self._lock:
            if self._dead_error is not None:
                return
            self._dead_error = error
            pending = []
            while not self._commands.empty():
                pending.append(self._commands.get_nowait())
            self._commands.put(_Stop())  # wakes the step thread if the output thread is the one dying
        for command in pending:
            if isinstance(command, _Add) and command.accepted.set_running_or_notify_cancel():
                command.accepted.set_exception(EngineDeadError(str(error)))
            elif isinstance(command, _Call) and command.done.set_running_or_notify_cancel():
                command.done.set_exception(EngineDeadError(str(error)))
        self._outputs.put(_Close(error))

    def _end_streams(self, error: EngineDeadError) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestStream, BaseException]]] = defaultdict(list)
        for stream in self._streams.values():
            by_loop[stream.loop].append((stream, EngineDeadError(str(error))))
        self._streams.clear()
        for loop, items in by_loop.items():
            _push_threadsafe(loop, items)


def _push_threadsafe(loop: asyncio.AbstractEventLoop, items: list[tuple[RequestStream, Any]]) -> None:
    def push_all() -> None:
        for stream, item in items:
            stream.push(item)

    try:
        loop.call_soon_threadsafe(push_all)
    except RuntimeError:
        pass  # that event loop is closed, so nobody is left to read these streams

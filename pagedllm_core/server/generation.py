"""The engine requests behind one HTTP request, read as one stream under the request timeout."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

from pagedllm_core.engine.async_engine import RequestStream
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.outputs import RequestOutput
from pagedllm_core.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams
from pagedllm_core.server.errors import ContextLengthExceededError, RequestTimeoutError
from pagedllm_core.server.metrics import RequestTracker
from pagedllm_core.server.request_context import current_request
from pagedllm_core.server.state import ServerState


def admit(server: ServerState, prompts: list[list[int]]) -> list[str]:
    """New engine request ids for these prompts, admitted by the server (429 / 503 otherwise).

    The prompt tokens count towards the access log's line from here on.
    """
    base_id = uuid.uuid4().hex
    request_ids = [f"{base_id}-{i}" for i in range(len(prompts))]
    server.in_flight.admit(request_ids, server.engine.stats().num_running_requests)
    context = current_request()
    if context is not None:
        context.num_prompt_tokens += sum(len(prompt) for prompt in prompts)
    return request_ids


class Generation:
    """One engine request per prompt; :meth:`outputs` merges their streams in arrival order.

    Use it as a context manager: leaving it (a finished response, a client that went away, an
    error, a timeout) aborts whatever is still running, so no KV block outlives its request.
    """

    def __init__(self, server: ServerState, streams: list[RequestStream], trackers: list[RequestTracker]):
        self.server = server
        self.streams = streams
        self.trackers = trackers
        self.timeout = server.settings.limits.request_timeout
        self.deadline = None if self.timeout is None else asyncio.get_running_loop().time() + self.timeout
        self._closed = False

    @classmethod
    async def start(
        cls,
        server: ServerState,
        prompts: list[list[int]],
        params: SamplingParams | list[BeamSearchParams],
        lora_request: LoRARequest | None = None,
    ) -> Generation:
        """Add every prompt to the engine (with one ``SamplingParams`` for all, or a beam search each);
        if any is rejected, abort the others and raise its error. Sampled requests stream deltas
        (``RequestOutputKind.DELTA``): the engine sends each step's new text only.

        Raises 429 when the server's queue is full and 503 while it shuts down (see :class:`InFlightRequests`).
        """
        if isinstance(params, SamplingParams):
            params = dataclasses.replace(params, output_kind=RequestOutputKind.DELTA)
        params_per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        for token_ids, prompt_params in zip(prompts, params_per_prompt):
            ContextLengthExceededError.check(server.engine.max_model_len, len(token_ids), prompt_params.max_tokens)
        request_ids = admit(server, prompts)
        trackers = [server.metrics.new_request() for _ in prompts]
        try:
            added = await asyncio.gather(
                *(
                    server.engine.add_request(request_id, ids, prompt_params, lora_request=lora_request)
                    for request_id, ids, prompt_params in zip(request_ids, prompts, params_per_prompt)
                ),
                return_exceptions=True,
            )
        except BaseException:
            server.in_flight.release(request_ids)
            raise
        streams = [item for item in added if not isinstance(item, BaseException)]
        errors = [item for item in added if isinstance(item, BaseException)]
        if errors:
            for stream in streams:
                stream.close()
            server.in_flight.release(request_ids)
            raise errors[0]
        return cls(server, streams, trackers)

    def close(self) -> None:
        """Abort what is still running (counted as aborted) and release the requests' admission."""
        if self._closed:
            return
        self._closed = True
        for stream, tracker in zip(self.streams, self.trackers):
            if not stream.finished:
                tracker.abort()
            stream.close()
        self.server.in_flight.release([stream.request_id for stream in self.streams])

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    async def outputs(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """``(prompt index, output)`` pairs until every prompt is finished: deltas for sampled requests,
        one whole output for a beam search."""
        pending: dict[asyncio.Future, int] = {}

        def wait_next(index: int) -> None:
            pending[asyncio.ensure_future(anext(self.streams[index]))] = index

        for index in range(len(self.streams)):
            wait_next(index)
        try:
            while pending:
                remaining = None if self.deadline is None else self.deadline - asyncio.get_running_loop().time()
                done, _ = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise RequestTimeoutError(self.timeout)
                for future in done:
                    index = pending.pop(future)
                    output = future.result()
                    self.trackers[index].observe(output)
                    yield index, output
                    if not output.finished:
                        wait_next(index)
        finally:
            for future in pending:
                future.cancel()

    async def final_outputs(self) -> list[RequestOutput]:
        """The whole output of every prompt (its deltas folded together), in prompt order."""
        finals: list[RequestOutput | None] = [None] * len(self.streams)
        async for index, output in self.outputs():
            if finals[index] is None:
                finals[index] = output
            else:
                finals[index].add(output)
        return finals

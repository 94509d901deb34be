"""The engine requests behind one HTTP request, read as one stream under the request timeout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from pagedllm_core.engine.async_engine import RequestStream
from pagedllm_core.outputs import RequestOutput
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams
from pagedllm_core.server.errors import ContextLengthExceededError, RequestTimeoutError
from pagedllm_core.server.metrics import RequestTracker
from pagedllm_core.server.state import ServerState


class Generation:
    """One engine request per prompt; :meth:`outputs` merges their streams in arrival order.

    Use it as a context manager: leaving it (a finished response, a client that went away, an
    error, a timeout) aborts whatever is still running, so no KV block outlives its request.
    """

    def __init__(self, streams: list[RequestStream], trackers: list[RequestTracker], timeout: float | None):
        self.streams = streams
        self.trackers = trackers
        self.timeout = timeout
        self.deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout

    @classmethod
    async def start(
        cls, server: ServerState, prompts: list[list[int]], params: SamplingParams | list[BeamSearchParams]
    ) -> Generation:
        """Add every prompt to the engine (with one ``SamplingParams`` for all, or a beam search each);
        if any is rejected, abort the others and raise its error."""
        params_per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        for token_ids, prompt_params in zip(prompts, params_per_prompt):
            ContextLengthExceededError.check(server.engine.max_model_len, len(token_ids), prompt_params.max_tokens)
        base_id = uuid.uuid4().hex
        trackers = [server.metrics.new_request() for _ in prompts]
        added = await asyncio.gather(
            *(
                server.engine.add_request(f"{base_id}-{i}", ids, prompt_params)
                for i, (ids, prompt_params) in enumerate(zip(prompts, params_per_prompt))
            ),
            return_exceptions=True,
        )
        streams = [item for item in added if isinstance(item, RequestStream)]
        errors = [item for item in added if isinstance(item, BaseException)]
        if errors:
            for stream in streams:
                stream.close()
            raise errors[0]
        return cls(streams, trackers, server.settings.limits.request_timeout)

    def close(self) -> None:
        for stream in self.streams:
            stream.close()

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    async def outputs(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """``(prompt index, cumulative output)`` pairs until every prompt is finished."""
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
        """The finished output of every prompt, in prompt order."""
        finals: list[RequestOutput | None] = [None] * len(self.streams)
        async for index, output in self.outputs():
            finals[index] = output
        return finals

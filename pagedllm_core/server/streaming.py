"""Server-sent events, per-choice chunks of delta outputs, and stopping work for gone clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
import dataclasses
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from pagedllm_core.outputs import CompletionOutput, PositionLogprobs, RequestOutput
from pagedllm_core.server.errors import ClientDisconnectedError, as_api_error

T = TypeVar("T")

SSE_DONE = "data: [DONE]\n\n"


def sse_event(chunk: BaseModel) -> str:
    # Nulls are left out, as in OpenAI's own chunks ({"delta": {"content": "x"}}).
    return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"


class _EventStreamResponse(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends, even if it never started."""

    def __init__(self, events: AsyncIterator[str], on_close: Callable[[], None]):
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def sse_response(events: AsyncIterator[str], on_close: Callable[[], None]) -> StreamingResponse:
    """Stream ``events`` as ``text/event-stream``, then call ``on_close`` (abort what is left).

    The stream always ends with ``data: [DONE]``; an error mid-stream becomes an error event
    before it, which the ``openai`` client raises as an ``APIError``.
    """

    async def with_error_event() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except Exception as error:  # noqa: BLE001 - the status line is sent; report it in-band
            yield f"data: {json.dumps(as_api_error(error).body())}\n\n"
        yield SSE_DONE

    return _EventStreamResponse(with_error_event(), on_close)


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (which aborts its engine requests) if the client disconnects."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnectedError("the client disconnected")
    return task.result()


async def _wait_for_disconnect(request: Request) -> None:
    # The body has been read by now, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


@dataclass
class ChoiceDelta:
    """What one choice gained since the last chunk."""

    index: int  # the choice's index in the response
    text: str
    token_ids: list[int]
    logprobs: list[PositionLogprobs] | None
    num_previous_tokens: int
    finish_reason: str | None
    stop_reason: int | str | None
    is_first: bool


class DeltaTracker:
    """Turns delta outputs into per-choice chunks, and counts tokens for ``usage``.

    A step whose tokens add no text yet (half a UTF-8 character) is held until text arrives, so
    every chunk carries text, its tokens and their logprobs together.
    """

    def __init__(self, num_choices_per_prompt: int):
        self.num_choices_per_prompt = num_choices_per_prompt
        self._num_tokens: dict[int, int] = {}  # choice index -> tokens sent in chunks
        self._held: dict[int, CompletionOutput] = {}  # choice index -> tokens waiting for their text
        self._finished: set[int] = set()

    @property
    def num_completion_tokens(self) -> int:
        return sum(self._num_tokens.values()) + sum(len(held.token_ids) for held in self._held.values())

    def deltas(self, prompt_index: int, output: RequestOutput) -> list[ChoiceDelta]:
        result = []
        for completion in output.outputs:
            index = prompt_index * self.num_choices_per_prompt + completion.index
            delta = self._advance(index, completion)
            if delta is not None:
                result.append(delta)
        return result

    def _advance(self, index: int, completion: CompletionOutput) -> ChoiceDelta | None:
        if index in self._finished:
            return None
        held = self._held.pop(index, None)
        if held is not None:
            held.add(completion)
            completion = held
        if not completion.text and completion.finish_reason is None:
            # e.g. half a UTF-8 character: wait for the rest (a copy, as it is added to later)
            self._held[index] = dataclasses.replace(completion)
            return None
        is_first = index not in self._num_tokens
        num_tokens = self._num_tokens.get(index, 0)
        self._num_tokens[index] = num_tokens + len(completion.token_ids)
        if completion.finish_reason is not None:
            self._finished.add(index)
        return ChoiceDelta(
            index=index,
            text=completion.text,
            token_ids=completion.token_ids,
            logprobs=completion.logprobs,
            num_previous_tokens=num_tokens,
            finish_reason=completion.finish_reason,
            stop_reason=completion.stop_reason,
            is_first=is_first,
        )

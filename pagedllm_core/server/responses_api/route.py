"""``POST /v1/responses``: the conversation rendered like a chat, answered as a response object or its events."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from pagedllm_core.outputs import RequestOutput
from pagedllm_core.server.generation import Generation
from pagedllm_core.server.responses_api.objects import (
    IncompleteDetails,
    OutputMessage,
    OutputText,
    ResponseEvent,
    ResponseObject,
    ResponseUsage,
)
from pagedllm_core.server.responses_api.protocol import ResponsesRequest
from pagedllm_core.server.state import Server
from pagedllm_core.server.streaming import DeltaTracker, cancel_on_disconnect, sse_response

router = APIRouter()


@router.post("/v1/responses", response_model=ResponseObject)
async def create_response(body: ResponsesRequest, request: Request, server: Server):
    model = server.check_model(body.model)
    params = body.to_sampling_params()
    prompt_token_ids = await server.render_chat(body.messages())
    responder = _Responder(body, model, len(prompt_token_ids))
    generation = await Generation.start(server, [prompt_token_ids], params, lora_request=server.lora_request(model))
    if body.stream:
        return sse_response(responder.events(generation), on_close=generation.close)
    with generation:
        return await cancel_on_disconnect(request, responder.respond(generation))


class _Responder:
    """Builds the response object (or its events) of one request."""

    def __init__(self, body: ResponsesRequest, model: str, num_input_tokens: int):
        self.body = body
        self.model = model
        self.num_input_tokens = num_input_tokens
        self.response_id = f"resp_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.sequence_number = 0

    async def respond(self, generation: Generation) -> ResponseObject:
        (output,) = await generation.final_outputs()
        (completion,) = output.outputs
        return self._response(completion.text, completion.finish_reason, len(completion.token_ids))

    def _response(self, text: str | None, finish_reason: str | None, num_output_tokens: int) -> ResponseObject:
        """The response object; ``text`` None while generating (no output yet)."""
        body = self.body
        echoed: dict[str, Any] = {
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "text": body.text.model_dump(by_alias=True, exclude_none=True),
            "metadata": body.metadata or {},
            "user": body.user,
        }
        echoed.update({name: getattr(body, name) for name in ("temperature", "top_p") if getattr(body, name) is not None})
        if text is None:
            return ResponseObject(id=self.response_id, model=self.model, status="in_progress", **echoed)
        status = "incomplete" if finish_reason == "length" else "completed"
        return ResponseObject(
            id=self.response_id,
            model=self.model,
            status=status,
            output=[self._message(text, status)],
            usage=ResponseUsage.of(self.num_input_tokens, num_output_tokens),
            incomplete_details=IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None,
            **echoed,
        )

    def _message(self, text: str, status: str) -> OutputMessage:
        return OutputMessage(id=self.message_id, status=status, content=[OutputText(text=text)])

    def _event(self, event_type: str, **fields: Any) -> str:
        event = ResponseEvent(type=event_type, sequence_number=self.sequence_number, **fields)
        self.sequence_number += 1
        return f"event: {event_type}\ndata: {event.model_dump_json()}\n\n"

    async def events(self, generation: Generation) -> AsyncIterator[str]:
        """The events OpenAI sends for one text message, in its order."""
        in_progress = self._response(None, None, 0).model_dump()
        yield self._event("response.created", response=in_progress)
        yield self._event("response.in_progress", response=in_progress)
        item = self._message("", "in_progress").model_dump()
        item["content"] = []
        yield self._event("response.output_item.added", output_index=0, item=item)
        part_position = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        yield self._event("response.content_part.added", **part_position, part=OutputText(text="").model_dump())
        tracker = DeltaTracker(1)
        whole: RequestOutput | None = None
        async for _, output in generation.outputs():
            for delta in tracker.deltas(0, output):
                if delta.text:
                    yield self._event("response.output_text.delta", **part_position, delta=delta.text, logprobs=[])
            if whole is None:
                whole = copy.deepcopy(output)  # folded below; the tracker keeps its own copies
            else:
                whole.add(output)
        final = whole.outputs[0]
        response = self._response(final.text, final.finish_reason, len(final.token_ids))
        message = response.output[0]
        yield self._event("response.output_text.done", **part_position, text=final.text, logprobs=[])
        yield self._event("response.content_part.done", **part_position, part=message.content[0].model_dump())
        yield self._event("response.output_item.done", output_index=0, item=message.model_dump())
        # Always response.completed (its status may say "incomplete"), as vLLM sends it: the openai
        # client's stream helper only takes its final response from that event.
        yield self._event("response.completed", response=response.model_dump())

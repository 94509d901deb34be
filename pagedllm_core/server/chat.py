"""``POST /v1/chat/completions``: a conversation rendered with the chat template, answered whole or streamed."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from pagedllm_core.server.generation import Generation
from pagedllm_core.server.logprobs import TokenLabeler, chat_logprobs
from pagedllm_core.server.protocol import ChatCompletionRequest
from pagedllm_core.server.responses import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    UsageInfo,
    new_response_id,
)
from pagedllm_core.server.state import Server, ServerState
from pagedllm_core.server.streaming import DeltaTracker, cancel_on_disconnect, sse_event, sse_response
from pagedllm_core.server.tool_calls import ChoiceMessage, ToolCallReader, ToolCallStream

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, server: Server):
    model = server.check_model(body.model)
    tool_reader = body.tool_call_reader(server.settings)
    keep_special_tokens = _keeps_tool_markers(body, tool_reader)
    params = body.to_sampling_params(server.settings.limits)
    if keep_special_tokens:
        params = dataclasses.replace(params, skip_special_tokens=False)
    prompt_token_ids = await server.render_chat(body.messages, *body.chat_template_options(), body.template_tools())
    chat = _Chat(server, body, model, len(prompt_token_ids), params.logprobs, tool_reader)
    if body.use_beam_search:
        params = body.beam_search_params_per_prompt(server.settings.limits, server.engine.max_model_len, [prompt_token_ids])
    generation = await Generation.start(server, [prompt_token_ids], params, lora_request=server.lora_request(model))
    if body.stream:
        return sse_response(chat.stream(generation), on_close=generation.close)
    with generation:
        return await cancel_on_disconnect(request, chat.respond(generation))


def _keeps_tool_markers(body: ChatCompletionRequest, tool_reader: ToolCallReader | None) -> bool:
    """Whether special tokens stay in the text because the tool parser looks for one (unless the client chose)."""
    return tool_reader is not None and tool_reader.parser.needs_special_tokens and body.skip_special_tokens is None


class _Chat:
    """Builds the response (or chunks) of one chat request from its engine outputs."""

    def __init__(
        self,
        server: ServerState,
        body: ChatCompletionRequest,
        model: str,
        num_prompt_tokens: int,
        logprobs: int | None,
        tool_reader: ToolCallReader | None,
    ):
        self.server = server
        self.body = body
        self.model = model
        self.num_prompt_tokens = num_prompt_tokens
        self.num_logprobs = logprobs
        self.tool_reader = tool_reader
        self.response_id = new_response_id("chatcmpl")

    def _logprobs(self, token_ids, positions):
        if self.num_logprobs is None or positions is None:
            return None
        labeler = TokenLabeler(self.server.engine.tokenizer, bool(self.body.return_tokens_as_token_ids))
        return chat_logprobs(labeler, token_ids, positions, self.num_logprobs)

    def _message(self, text: str) -> ChoiceMessage:
        return ChoiceMessage(text, []) if self.tool_reader is None else self.tool_reader.message(text)

    async def respond(self, generation: Generation) -> ChatCompletionResponse:
        (output,) = await generation.final_outputs()
        choices = []
        for completion in sorted(output.outputs, key=lambda completion: completion.index):
            message = self._message(completion.text)
            choices.append(
                ChatChoice(
                    index=completion.index,
                    message=AssistantMessage(content=message.content, tool_calls=message.tool_calls),
                    logprobs=self._logprobs(completion.token_ids, completion.logprobs),
                    finish_reason=message.finish_reason(completion.finish_reason),
                    stop_reason=completion.stop_reason,
                )
            )
        num_completion_tokens = sum(len(completion.token_ids) for completion in output.outputs)
        return ChatCompletionResponse(
            id=self.response_id,
            model=self.model,
            choices=choices,
            usage=UsageInfo.of(self.num_prompt_tokens, num_completion_tokens),
        )

    async def stream(self, generation: Generation) -> AsyncIterator[str]:
        tracker = DeltaTracker(self.body.n)
        texts = [""] * self.body.n
        tool_streams: list[ToolCallStream | None] = [
            None if self.tool_reader is None else self.tool_reader.stream() for _ in range(self.body.n)
        ]
        for index in range(self.body.n):
            # OpenAI opens each choice with the role before any content arrives.
            choice = ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))
            yield sse_event(self._chunk([choice], tracker, self.body.continuous_usage))
        async for _, output in generation.outputs():
            for delta in tracker.deltas(0, output):
                texts[delta.index] += delta.text
                tool_stream = tool_streams[delta.index]
                finish_reason = delta.finish_reason
                if tool_stream is None:
                    chat_delta = ChatDelta(content=delta.text or None)
                else:
                    piece = tool_stream.feed(texts[delta.index], final=finish_reason is not None)
                    chat_delta = ChatDelta(content=piece.content or None, tool_calls=piece.tool_calls or None)
                    if tool_stream.called and finish_reason == "stop":
                        finish_reason = "tool_calls"
                choice = ChatChunkChoice(
                    index=delta.index,
                    delta=chat_delta,
                    logprobs=self._logprobs(delta.token_ids, delta.logprobs),
                    finish_reason=finish_reason,
                )
                yield sse_event(self._chunk([choice], tracker, self.body.continuous_usage))
        if self.body.include_usage:
            yield sse_event(self._chunk([], tracker, True))

    def _chunk(self, choices: list[ChatChunkChoice], tracker: DeltaTracker, with_usage: bool) -> ChatCompletionChunk:
        usage = UsageInfo.of(self.num_prompt_tokens, tracker.num_completion_tokens) if with_usage else None
        return ChatCompletionChunk(id=self.response_id, model=self.model, choices=choices, usage=usage)

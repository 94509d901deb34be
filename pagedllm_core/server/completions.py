"""``POST /v1/completions``: one or more prompts, answered whole or as a stream of chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from pagedllm_core.outputs import RequestOutput
from pagedllm_core.server.generation import Generation
from pagedllm_core.server.logprobs import TokenLabeler, completion_logprobs
from pagedllm_core.server.protocol import CompletionRequest
from pagedllm_core.server.responses import (
    CompletionChoice,
    CompletionChunk,
    CompletionResponse,
    UsageInfo,
    new_response_id,
)
from pagedllm_core.server.state import Prompt, Server, ServerState
from pagedllm_core.server.streaming import DeltaTracker, cancel_on_disconnect, sse_event, sse_response

router = APIRouter()


@router.post("/v1/completions", response_model=CompletionResponse)
async def create_completion(body: CompletionRequest, request: Request, server: Server):
    model = server.check_model(body.model)
    params = body.to_sampling_params(server.settings.limits)
    prompts = await asyncio.gather(*(server.prompt_of(prompt, with_text=bool(body.echo)) for prompt in body.prompts()))
    completion = _Completion(server, body, model, prompts, params.logprobs)
    prompt_token_ids = [prompt.token_ids for prompt in prompts]
    if body.use_beam_search:
        params = body.beam_search_params_per_prompt(server.settings.limits, server.engine.max_model_len, prompt_token_ids)
    generation = await Generation.start(server, prompt_token_ids, params, lora_request=server.lora_request(model))
    if body.stream:
        return sse_response(completion.stream(generation), on_close=generation.close)
    with generation:
        return await cancel_on_disconnect(request, completion.respond(generation))


class _Completion:
    """Builds the response (or chunks) of one completion request from its engine outputs."""

    def __init__(
        self, server: ServerState, body: CompletionRequest, model: str, prompts: list[Prompt], logprobs: int | None
    ):
        self.server = server
        self.body = body
        self.model = model
        self.prompts = prompts
        self.num_logprobs = logprobs
        self.response_id = new_response_id("cmpl")
        self.num_prompt_tokens = sum(len(prompt.token_ids) for prompt in prompts)

    async def respond(self, generation: Generation) -> CompletionResponse:
        outputs = await generation.final_outputs()
        choices = [choice for i, output in enumerate(outputs) for choice in self._choices(i, output)]
        num_completion_tokens = sum(len(c.token_ids) for output in outputs for c in output.outputs)
        return CompletionResponse(
            id=self.response_id,
            model=self.model,
            choices=choices,
            usage=UsageInfo.of(self.num_prompt_tokens, num_completion_tokens),
        )

    def _choices(self, prompt_index: int, output: RequestOutput) -> list[CompletionChoice]:
        echo = self.prompts[prompt_index].text if self.body.echo else ""
        return [
            CompletionChoice(
                index=prompt_index * self.body.n + completion.index,
                text=echo + completion.text,
                logprobs=self._logprobs(completion.token_ids, completion.logprobs, 0),
                finish_reason=completion.finish_reason,
                stop_reason=completion.stop_reason,
            )
            for completion in sorted(output.outputs, key=lambda completion: completion.index)
        ]

    def _logprobs(self, token_ids, positions, text_offset: int):
        if self.num_logprobs is None or positions is None:
            return None
        labeler = TokenLabeler(self.server.engine.tokenizer, bool(self.body.return_tokens_as_token_ids))
        return completion_logprobs(labeler, token_ids, positions, self.num_logprobs, text_offset)

    async def stream(self, generation: Generation) -> AsyncIterator[str]:
        tracker = DeltaTracker(self.body.n)
        text_offsets: dict[int, int] = {}
        async for prompt_index, output in generation.outputs():
            for delta in tracker.deltas(prompt_index, output):
                echo = self.prompts[prompt_index].text if self.body.echo and delta.is_first else ""
                offset = text_offsets.get(delta.index, 0)
                text_offsets[delta.index] = offset + len(echo) + len(delta.text)
                choice = CompletionChoice(
                    index=delta.index,
                    text=echo + delta.text,
                    logprobs=self._logprobs(delta.token_ids, delta.logprobs, offset + len(echo)),
                    finish_reason=delta.finish_reason,
                    stop_reason=delta.stop_reason,
                )
                yield sse_event(self._chunk([choice], tracker, self.body.continuous_usage))
        if self.body.include_usage:
            yield sse_event(self._chunk([], tracker, True))

    def _chunk(self, choices: list[CompletionChoice], tracker: DeltaTracker, with_usage: bool) -> CompletionChunk:
        usage = UsageInfo.of(self.num_prompt_tokens, tracker.num_completion_tokens) if with_usage else None
        return CompletionChunk(id=self.response_id, model=self.model, choices=choices, usage=usage)

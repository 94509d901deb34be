"""Turns the core's token-id outputs into ``RequestOutput``s: detokenization, stop strings, logprob text.

This is the part of a step that needs the tokenizer. ``LLMEngine.step`` runs it right after the core
step; the async engine runs it on an output thread of its own, so it overlaps the next step's forward
pass (which releases the GIL) instead of adding to it. A stop string is found here, after the core has
possibly run the sequence a step further: the processor cuts the text, reports the sequence in
:attr:`ProcessedOutputs.stopped` for the core to finish, and ignores what the core still sends for it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from pagedllm_core.engine.beam_search import Hypothesis
from pagedllm_core.engine.core_outputs import EngineCoreOutput
from pagedllm_core.engine.request_state import RequestState
from pagedllm_core.outputs import CompletionOutput, RequestOutput
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams


@dataclass
class ProcessedOutputs:
    """A batch of core outputs made into request outputs, and what the core must be told back."""

    outputs: list[RequestOutput] = field(default_factory=list)
    # (request id, sequence index, stop string) of sequences whose text reached a stop string.
    stopped: list[tuple[str, int, str]] = field(default_factory=list)
    # Requests whose output processing failed (their detokenizer raised): the core must abort them.
    failed: list[str] = field(default_factory=list)


class OutputProcessor:
    """Holds the text-side state of every open request; owned by one thread at a time."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._decode_token = functools.lru_cache(maxsize=65536)(self._decode_one)
        self._states: dict[str, RequestState] = {}
        self._beam_searches: dict[str, list[int]] = {}  # request id -> prompt token ids

    def _decode_one(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def add_request(
        self, request_id: str, prompt: str | None, prompt_token_ids: list[int], params: SamplingParams | BeamSearchParams
    ) -> None:
        """Start tracking a request the core accepted (before any of its core outputs arrive)."""
        if isinstance(params, BeamSearchParams):
            self._beam_searches[request_id] = prompt_token_ids
        else:
            self._states[request_id] = RequestState(
                request_id, prompt, prompt_token_ids, params, self.tokenizer, self._decode_token
            )

    def process(self, core_outputs: list[EngineCoreOutput]) -> ProcessedOutputs:
        processed = ProcessedOutputs()
        for core_output in core_outputs:
            if core_output.request_id in self._beam_searches:
                processed.outputs.append(self._beam_search_output(core_output))
                continue
            state = self._states.get(core_output.request_id)
            if state is None:
                continue  # finished here already (a stop string); the core caught up later
            try:
                output = self._process_request(state, core_output, processed.stopped)
            except Exception as error:  # noqa: BLE001 - one request's detokenizer failure is its own
                del self._states[state.request_id]
                processed.failed.append(state.request_id)
                state.mark_core_finished("abort")
                output = state.output()
                output.error = f"detokenizing failed: {type(error).__name__}: {error}"
            if output is not None:
                processed.outputs.append(output)
        return processed

    def _process_request(
        self, state: RequestState, core_output: EngineCoreOutput, stopped: list[tuple[str, int, str]]
    ) -> RequestOutput | None:
        state.add_prompt_logprobs(core_output.prompt_logprobs)
        for update in core_output.updates:
            sequence = state.sequence(update.index)
            if sequence.apply(update):
                stopped.append((state.request_id, update.index, sequence.stop_reason))
        if core_output.finished:
            state.mark_core_finished("abort")
        if state.finished:
            del self._states[state.request_id]
            output = state.output()
            output.error = core_output.error
            return output
        if core_output.updates and state.streams_progress:
            return state.output()
        return None

    def _beam_search_output(self, core_output: EngineCoreOutput) -> RequestOutput:
        prompt_token_ids = self._beam_searches.pop(core_output.request_id)
        return RequestOutput(
            request_id=core_output.request_id,
            prompt=None,
            prompt_token_ids=prompt_token_ids,
            outputs=[self._beam_completion(index, beam) for index, beam in enumerate(core_output.beams or [])],
            finished=True,
            error=core_output.error,
        )

    def _beam_completion(self, index: int, beam: Hypothesis) -> CompletionOutput:
        return CompletionOutput(
            index=index,
            text=self.tokenizer.decode(beam.token_ids, skip_special_tokens=True),
            token_ids=beam.token_ids,
            cumulative_logprob=beam.cum_logprob,
            finish_reason=beam.finish_reason,
        )

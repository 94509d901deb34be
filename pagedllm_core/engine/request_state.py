"""What the output processor tracks per user request: text, stop strings, logprobs.

It is built from :class:`~pagedllm_core.engine.core_outputs.EngineCoreOutput`s alone and never
touches the core's live sequences, so it can run on another thread than the one that steps.
"""

from __future__ import annotations

from collections.abc import Callable

from pagedllm_core.engine import stopping
from pagedllm_core.engine.core_outputs import SequenceUpdate
from pagedllm_core.engine.detokenizer import IncrementalDetokenizer
from pagedllm_core.executor.messages import TokenLogprobs
from pagedllm_core.outputs import CompletionOutput, Logprob, PositionLogprobs, RequestOutput
from pagedllm_core.sampling.sampler import needs_sample_logprobs
from pagedllm_core.sampling_params import RequestOutputKind, SamplingParams

DecodeToken = Callable[[int], str]
STOP = "stop"


class SequenceState:
    """One sequence's tokens, text and logprobs as they grow."""

    def __init__(self, params: SamplingParams, prompt_token_ids: list[int], tokenizer, decode_token: DecodeToken):
        self.params = params
        self.detokenizer = (
            IncrementalDetokenizer(tokenizer, prompt_token_ids, params.skip_special_tokens) if params.detokenize else None
        )
        self.decode_token = decode_token
        self.token_ids: list[int] = []
        # As in vLLM, only requests that asked for logprobs report it (and best_of > n, which ranks by it).
        self.cumulative_logprob: float | None = 0.0 if needs_sample_logprobs(params) else None
        self.logprobs: list[PositionLogprobs] | None = [] if params.logprobs is not None else None
        self.text = ""
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        # Streamed text holds back what could still turn out to be the start of a stop string.
        self._holdback = max((len(stop) for stop in params.stop_strings), default=1) - 1
        self._num_sent_chars = self._num_sent_tokens = 0  # what deltas have carried so far

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def apply(self, update: SequenceUpdate) -> bool:
        """Take the step's news for this sequence; returns True when its text completed a stop string
        (the sequence is then finished here, and the core must be told). A sequence finished here
        ignores what the core produced for it before it learnt so."""
        if self.finished:
            return False
        logprobs = update.new_logprobs or [None] * len(update.new_token_ids)
        last = len(update.new_token_ids) - 1
        for position, (token_id, token) in enumerate(zip(update.new_token_ids, logprobs)):
            ended_by_stop_token = position == last and update.finish_reason == STOP and update.stop_reason == token_id
            if self._add_token(token_id, token, ended_by_stop_token):
                self.finish_reason = STOP
                return True
        if update.finish_reason is not None:
            self.finish_reason, self.stop_reason = update.finish_reason, update.stop_reason
        return False

    def finish(self, reason: str) -> None:
        if not self.finished:
            self.finish_reason = reason

    def _add_token(self, token_id: int, token: TokenLogprobs | None, ended_by_stop_token: bool) -> bool:
        """Append one token; True when it completed a stop string.

        The text of a stop token that ended the sequence stays out of the output (as in vLLM) unless
        ``include_stop_str_in_output``; it shows otherwise when special tokens are kept."""
        self.token_ids.append(token_id)
        if token is not None and self.cumulative_logprob is not None:
            self.cumulative_logprob += token.logprob
            if self.logprobs is not None:
                self.logprobs.append(position_logprobs(token, self.decode_token))
        if self.detokenizer is None or (ended_by_stop_token and not self.params.include_stop_str_in_output):
            return False
        previous_length = len(self.text)
        self.text += self.detokenizer.add_tokens([token_id])
        return self._cut_at_stop_string(previous_length)

    def _cut_at_stop_string(self, previous_length: int) -> bool:
        params = self.params
        if not params.stop_strings or len(self.token_ids) < params.min_tokens:
            return False
        match = stopping.find_stop_string(self.text, previous_length, params)
        if match is None:
            return False
        end, self.stop_reason = match
        self.text = self.text[:end]
        return True

    def completion(self, index: int, delta: bool = False) -> CompletionOutput:
        """The sequence so far, or with ``delta`` only what was added since the previous delta."""
        visible = len(self.text) if self.finished else max(len(self.text) - self._holdback, 0)
        text_start, token_start = (self._num_sent_chars, self._num_sent_tokens) if delta else (0, 0)
        completion = CompletionOutput(
            index=index,
            text=self.text[text_start:visible],
            token_ids=self.token_ids[token_start:],
            cumulative_logprob=self.cumulative_logprob,
            logprobs=None if self.logprobs is None else self.logprobs[token_start:],
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
        )
        if delta:
            self._num_sent_chars, self._num_sent_tokens = max(visible, text_start), len(self.token_ids)
        return completion


class RequestState:
    """A user request: its prompt, its ``best_of`` sequences and its prompt logprobs."""

    def __init__(
        self, request_id: str, prompt: str | None, prompt_token_ids: list[int], params: SamplingParams, tokenizer,
        decode_token: DecodeToken,
    ):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.params = params
        self.tokenizer = tokenizer
        self.decode_token = decode_token
        self.sequences: dict[int, SequenceState] = {0: self._new_sequence()}
        self.prompt_logprobs: list[PositionLogprobs | None] | None = [None] if params.prompt_logprobs is not None else None
        self._sent_prompt_logprobs = False
        self._core_finished = False

    def _new_sequence(self) -> SequenceState:
        return SequenceState(self.params, self.prompt_token_ids, self.tokenizer, self.decode_token)

    def sequence(self, index: int) -> SequenceState:
        state = self.sequences.get(index)
        if state is None:
            state = self.sequences[index] = self._new_sequence()
        return state

    def add_prompt_logprobs(self, entries: list[tuple[int, TokenLogprobs]]) -> None:
        if self.prompt_logprobs is None:
            return
        for position, token in entries:
            # A preempted prompt is recomputed; positions already scored are not scored twice.
            if position == len(self.prompt_logprobs):
                self.prompt_logprobs.append(position_logprobs(token, self.decode_token))

    def mark_core_finished(self, reason: str) -> None:
        """The core holds nothing more of the request: what is still open ended with ``reason``."""
        self._core_finished = True
        for state in self.sequences.values():
            state.finish(reason)

    @property
    def finished(self) -> bool:
        every_sequence_started = len(self.sequences) == self.params.best_of or self._core_finished
        return every_sequence_started and all(state.finished for state in self.sequences.values())

    @property
    def streams_progress(self) -> bool:
        """Partial outputs make sense only when every generated sequence is returned, and are made
        only when the request wants them (not ``FINAL_ONLY``)."""
        return self.params.best_of == self.params.n and self.params.output_kind is not RequestOutputKind.FINAL_ONLY

    def output(self) -> RequestOutput:
        ordered = [self.sequences[index] for index in sorted(self.sequences)]
        if self.params.best_of > self.params.n:
            ordered = sorted(ordered, key=lambda state: state.cumulative_logprob, reverse=True)[: self.params.n]
        delta = self.params.output_kind is RequestOutputKind.DELTA
        prompt_logprobs = self.prompt_logprobs
        if delta and self._sent_prompt_logprobs:
            prompt_logprobs = None  # a delta stream carries them once, in its first output
        self._sent_prompt_logprobs = True
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            prompt_logprobs=prompt_logprobs,
            outputs=[state.completion(index, delta) for index, state in enumerate(ordered)],
            finished=self.finished,
        )


def position_logprobs(token: TokenLogprobs, decode_token: DecodeToken) -> PositionLogprobs:
    """The chosen token's entry plus the top alternatives, ranked as vLLM ranks them."""
    entries = {
        token_id: Logprob(logprob, rank, decode_token(token_id))
        for rank, (token_id, logprob) in enumerate(token.top, start=1)
    }
    entries.setdefault(token.token_id, Logprob(token.logprob, token.rank, decode_token(token.token_id)))
    return entries

"""What the engine tracks per user request between steps: text, stop strings, logprobs."""

from __future__ import annotations

from collections.abc import Callable

from pagedllm_core.engine.detokenizer import IncrementalDetokenizer
from pagedllm_core.engine import stopping
from pagedllm_core.engine.sequence import Sequence, SequenceStatus
from pagedllm_core.executor.messages import TokenLogprobs
from pagedllm_core.outputs import CompletionOutput, Logprob, PositionLogprobs, RequestOutput
from pagedllm_core.sampling_params import SamplingParams

DecodeToken = Callable[[int], str]


class SequenceState:
    """One sequence's text and logprobs as they grow."""

    def __init__(self, sequence: Sequence, tokenizer, decode_token: DecodeToken):
        self.sequence = sequence
        params = sequence.sampling_params
        self.detokenizer = (
            IncrementalDetokenizer(tokenizer, sequence.prompt_token_ids, params.skip_special_tokens)
            if params.detokenize
            else None
        )
        self.decode_token = decode_token
        self.cumulative_logprob = 0.0
        self.logprobs: list[PositionLogprobs] | None = [] if params.logprobs is not None else None
        self.text = ""
        # Streamed text holds back what could still turn out to be the start of a stop string.
        self._holdback = max((len(stop) for stop in params.stop_strings), default=1) - 1

    def add_token(self, token: TokenLogprobs | None, token_id: int) -> bool:
        """Take the sequence's newest token; returns True when it completed a stop string.

        The text of a stop token that ended the sequence stays out of the output (as in vLLM) unless
        ``include_stop_str_in_output``; it shows otherwise when special tokens are kept."""
        if token is not None:
            self.cumulative_logprob += token.logprob
            if self.logprobs is not None:
                self.logprobs.append(position_logprobs(token, self.decode_token))
        if self.detokenizer is None or self._ended_by_stop_token(token_id):
            return False
        previous_length = len(self.text)
        self.text += self.detokenizer.add_tokens([token_id])
        return self._cut_at_stop_string(previous_length)

    def _ended_by_stop_token(self, token_id: int) -> bool:
        sequence = self.sequence
        return (
            sequence.status is SequenceStatus.FINISHED_STOPPED
            and sequence.stop_reason == token_id
            and not sequence.sampling_params.include_stop_str_in_output
        )

    def _cut_at_stop_string(self, previous_length: int) -> bool:
        params = self.sequence.sampling_params
        if not params.stop_strings or self.sequence.below_min_tokens:
            return False
        match = stopping.find_stop_string(self.text, previous_length, params)
        if match is None:
            return False
        end, self.sequence.stop_reason = match
        self.text = self.text[:end]
        return True

    def completion(self, index: int) -> CompletionOutput:
        finished = self.sequence.is_finished
        text = self.text if finished or not self._holdback else self.text[: max(len(self.text) - self._holdback, 0)]
        return CompletionOutput(
            index=index,
            text=text,
            token_ids=self.sequence.output_token_ids,
            cumulative_logprob=self.cumulative_logprob,
            logprobs=self.logprobs,
            finish_reason=self.sequence.status.value if finished else None,
            stop_reason=self.sequence.stop_reason,
        )


class RequestState:
    """A user request: its prompt, its ``best_of`` sequences and its prompt logprobs."""

    def __init__(self, request_id: str, prompt: str | None, first: Sequence, tokenizer, decode_token: DecodeToken):
        self.request_id = request_id
        self.prompt = prompt
        self.params: SamplingParams = first.sampling_params
        self.first = first
        self.tokenizer = tokenizer
        self.decode_token = decode_token
        self.sequences: dict[int, SequenceState] = {0: SequenceState(first, tokenizer, decode_token)}
        self.prompt_logprobs: list[PositionLogprobs | None] | None = (
            [None] if self.params.prompt_logprobs is not None else None
        )

    def sequence(self, sequence: Sequence) -> SequenceState:
        state = self.sequences.get(sequence.index)
        if state is None:
            state = self.sequences[sequence.index] = SequenceState(sequence, self.tokenizer, self.decode_token)
        return state

    def add_prompt_logprobs(self, entries: list[tuple[int, TokenLogprobs]]) -> None:
        for position, token in entries:
            # A preempted prompt is recomputed; positions already scored are not scored twice.
            if position == len(self.prompt_logprobs):
                self.prompt_logprobs.append(position_logprobs(token, self.decode_token))

    @property
    def unfinished_sequences(self) -> list[Sequence]:
        return [state.sequence for state in self.sequences.values() if not state.sequence.is_finished]

    @property
    def finished(self) -> bool:
        all_forked = self.first.num_pending_forks == 0 or self.first.status is SequenceStatus.FINISHED_ABORTED
        return all_forked and not self.unfinished_sequences

    @property
    def streams_progress(self) -> bool:
        """Partial outputs make sense only when every generated sequence is returned."""
        return self.params.best_of == self.params.n

    def output(self) -> RequestOutput:
        ordered = [self.sequences[index] for index in sorted(self.sequences)]
        if self.params.best_of > self.params.n:
            ordered = sorted(ordered, key=lambda state: state.cumulative_logprob, reverse=True)[: self.params.n]
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.first.prompt_token_ids,
            prompt_logprobs=self.prompt_logprobs,
            outputs=[state.completion(index) for index, state in enumerate(ordered)],
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

"""What generation returns, in vLLM's shape."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Logprob:
    """A token's log-probability, its rank among all tokens (1 = most likely) and its text."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


# Per position: token id -> Logprob, holding the chosen token and the top alternatives asked for.
PositionLogprobs = dict[int, Logprob]


@dataclass
class CompletionOutput:
    """One generated sequence of a request."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: list[PositionLogprobs] | None = None
    finish_reason: str | None = None  # "stop", "length", "abort" or None while running
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it

    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, later: CompletionOutput) -> None:
        """Append a later delta of the same sequence (its text, tokens and logprobs; its newest state)."""
        self.text += later.text
        self.token_ids = [*self.token_ids, *later.token_ids]
        if self.logprobs is not None and later.logprobs is not None:
            self.logprobs = [*self.logprobs, *later.logprobs]
        self.cumulative_logprob = later.cumulative_logprob
        self.finish_reason, self.stop_reason = later.finish_reason, later.stop_reason


@dataclass
class RequestOutput:
    """The state of one request: its prompt and its outputs so far (final when ``finished``)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[PositionLogprobs | None] | None = None
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False
    # Set when the request failed on its own (its sampling, constraint or detokenizer raised) while
    # the engine went on; the outputs are what it had produced.
    error: str | None = None

    def add(self, later: RequestOutput) -> None:
        """Fold a later delta output (``RequestOutputKind.DELTA``) of the same request into this one."""
        by_index = {completion.index: completion for completion in self.outputs}
        for completion in later.outputs:
            mine = by_index.get(completion.index)
            if mine is None:
                self.outputs.append(completion)
            else:
                mine.add(completion)
        self.prompt_logprobs = self.prompt_logprobs or later.prompt_logprobs
        self.finished, self.error = later.finished, later.error


@dataclass
class BeamSearchSequence:
    """One beam: all its tokens (prompt included), their text and its cumulative logprob."""

    tokens: list[int]
    text: str
    cum_logprob: float
    score: float
    finish_reason: str  # "stop" (EOS) or "length"


@dataclass
class BeamSearchOutput:
    """The beams of one prompt, best first."""

    sequences: list[BeamSearchSequence]

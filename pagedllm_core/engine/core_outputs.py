"""What the engine core hands the output processor after each step: token ids, never text.

The core (scheduler, executor, sequences) produces these on the stepping thread; the
:class:`~pagedllm_core.engine.output_processor.OutputProcessor` turns them into ``RequestOutput``s
(detokenized text, stop strings, decoded logprobs), on the same thread offline or on its own thread in
the async engine. Everything here is plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pagedllm_core.engine.beam_search import Hypothesis
from pagedllm_core.executor.messages import TokenLogprobs


@dataclass
class SequenceUpdate:
    """What one sequence of a request got this step."""

    index: int  # the sequence's place in its request (0 .. best_of - 1)
    new_token_ids: list[int]
    # One entry per new token when the worker computed logprobs for it (None otherwise).
    new_logprobs: list[TokenLogprobs] | None = None
    finish_reason: str | None = None  # "stop", "length", "abort" once the core finished it
    stop_reason: int | None = None  # the stop token that finished it


@dataclass
class EngineCoreOutput:
    """One request's news from one step (or from an abort)."""

    request_id: str
    updates: list[SequenceUpdate] = field(default_factory=list)
    # (prompt position, its logprobs) scored this step, for requests that asked for prompt logprobs.
    prompt_logprobs: list[tuple[int, TokenLogprobs]] = field(default_factory=list)
    # The core holds nothing more of the request: every sequence finished, failed or was aborted.
    finished: bool = False
    error: str | None = None  # why the request failed on its own (its sampler or constraint raised)
    beams: list[Hypothesis] | None = None  # set when a beam search ends, best first

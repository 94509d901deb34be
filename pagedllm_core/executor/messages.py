"""The messages between the engine and its workers: plain, picklable data, no live objects.

Each step the engine sends one :class:`SchedulerOutput` to every worker and gets one
:class:`ModelRunnerOutput` back. A sequence's prompt, sampling params and block table travel once,
when a worker first sees it (:class:`NewSequenceData`: a new request, a fork, or a resume after
preemption); after that each step carries only what changed (:class:`CachedSequenceData`). The
worker keeps the rest in its persistent input batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.sampling_params import SamplingParams


def forked_seq_id(parent_seq_id: str, index: int) -> str:
    """The id of the ``index``-th sibling forked from ``parent_seq_id`` (``best_of``): the engine names
    the forks it makes so, and workers key the siblings' seeded generators so."""
    return f"{parent_seq_id}.{index}"


@dataclass
class NewSequenceData:
    """A sequence the worker does not hold yet, with everything it needs to run it."""

    seq_id: str
    prompt_token_ids: list[int]
    # Tokens generated so far: empty for a new request, kept when a fork or a preempted sequence starts.
    output_token_ids: list[int]
    sampling_params: SamplingParams
    # Tokens that end the sequence (stop ids and EOS): banned while it is under ``min_tokens``.
    stop_token_ids: list[int]
    block_ids: list[int]
    num_computed_tokens: int
    num_new_tokens: int
    num_samples: int
    # The sequence's place among its request's siblings: seeded siblings draw from distinct streams.
    index: int = 0
    # > 0 for a beam: score this many candidate next tokens instead of sampling one.
    num_beam_candidates: int = 0
    # The LoRA adapter the sequence runs with; None for the base model.
    lora_request: LoRARequest | None = None


@dataclass
class CachedSequenceData:
    """What changed for a sequence the worker holds since the step it last ran."""

    seq_id: str
    # Tokens the engine appended since (sampled-token feedback: the sampled token, or a beam's choice).
    new_token_ids: list[int]
    # The block table from index ``block_ids_start`` on (appended blocks, or a block replaced by a copy).
    block_ids_start: int
    new_block_ids: list[int]
    num_computed_tokens: int
    num_new_tokens: int
    num_samples: int
    # Speculative decoding: draft tokens to verify after the last token (counted in ``num_new_tokens``).
    spec_token_ids: list[int] = field(default_factory=list)


@dataclass
class SchedulerOutput:
    """One step for the workers. Scheduled sequences run in the order: new ones, then cached ones."""

    new_sequences: list[NewSequenceData] = field(default_factory=list)
    cached_sequences: list[CachedSequenceData] = field(default_factory=list)
    # Sequences to forget: finished ones (with their seeded generators) and preempted ones (kept
    # generators; they come back as new sequences).
    finished_seq_ids: list[str] = field(default_factory=list)
    preempted_seq_ids: list[str] = field(default_factory=list)
    # (source, destination) KV block copies to make before the forward pass (copy-on-write).
    block_copies: list[tuple[int, int]] = field(default_factory=list)
    # Structured outputs: seq id -> packed bitmask of the tokens its next sample may take.
    allowed_token_bitmasks: dict[str, bytes] = field(default_factory=dict)

    @property
    def num_scheduled_tokens(self) -> int:
        return sum(data.num_new_tokens for data in (*self.new_sequences, *self.cached_sequences))

    @property
    def is_empty(self) -> bool:
        return not self.new_sequences and not self.cached_sequences


@dataclass
class TokenLogprobs:
    """The log-probability of one token and, when asked for, the most likely alternatives."""

    token_id: int
    logprob: float | None  # None when nobody needs it (no logprobs asked for, no best_of > n ranking)
    rank: int | None  # None when no logprobs were asked for
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class ModelRunnerOutput:
    """What a step produced, by sequence id."""

    # Each sampling sequence's ``num_samples`` tokens: first for itself, then for the siblings it forks;
    # a sequence that verified drafts gets its run instead: the accepted drafts, then one more token.
    samples: dict[str, list[TokenLogprobs]] = field(default_factory=dict)
    # (prompt position, logprobs of the prompt token there) computed this step.
    prompt_logprobs: dict[str, list[tuple[int, TokenLogprobs]]] = field(default_factory=dict)
    # Beams: their ``num_beam_candidates`` best next tokens as (token id, logprob), best first.
    beam_candidates: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    # Sequences whose own sampling failed (the error, as text); the rest of the step is unaffected.
    failed: dict[str, str] = field(default_factory=dict)
    # Speculative decoding: draft tokens proposed for each sequence's next step.
    draft_token_ids: dict[str, list[int]] = field(default_factory=dict)

    @property
    def sampled_token_ids(self) -> dict[str, list[int]]:
        return {seq_id: [sample.token_id for sample in samples] for seq_id, samples in self.samples.items()}

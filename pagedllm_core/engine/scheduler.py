"""The scheduler contract: each step, decide how many tokens each sequence runs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledSequence:
    """A sequence given ``num_new_tokens`` tokens to compute this step, starting at its computed tokens."""

    sequence: Sequence
    num_new_tokens: int
    # Speculative decoding: draft tokens verified after the last token (counted in ``num_new_tokens``).
    spec_token_ids: list[int] = field(default_factory=list)

    @property
    def reaches_last_token(self) -> bool:
        """True when this step computes the sequence's last token, so its logits give the next one."""
        num_real_tokens = self.num_new_tokens - len(self.spec_token_ids)
        return self.sequence.num_computed_tokens + num_real_tokens == self.sequence.num_tokens

    @property
    def num_samples(self) -> int:
        """Tokens drawn from this sequence's last logits: 0, 1, or one per sibling when it forks.

        A beam draws none: the worker scores candidates for it and its group picks the token."""
        if not self.reaches_last_token or not self.sequence.samples_own_tokens:
            return 0
        return 1 + self.sequence.num_pending_forks


@dataclass
class StepPlan:
    """What the scheduler decided for one step, in the order the worker lays out the tokens.

    The engine turns it into the :class:`~pagedllm_core.executor.messages.SchedulerOutput` message
    that crosses to the workers; the plan itself holds live sequences and never leaves the engine."""

    scheduled: list[ScheduledSequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    block_copies: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_scheduled_tokens(self) -> int:
        return sum(item.num_new_tokens for item in self.scheduled)


class Scheduler(ABC):
    """Owns the waiting and running sequences and their KV blocks.

    There are no prefill and decode phases: a sequence simply has ``num_tokens`` tokens of which
    ``num_computed_tokens`` are cached, and each step the scheduler grants it some of the rest. A
    running sequence with nothing left to compute (a beam waiting for its group's choice) is skipped.
    """

    def __init__(self, config: EngineConfig, kv_cache_manager: KVCacheManager):
        self.config = config
        self.kv_cache_manager = kv_cache_manager

    @abstractmethod
    def add_sequence(self, sequence: Sequence) -> None:
        """Queue a new sequence."""

    @abstractmethod
    def add_forked_sequence(self, parent: Sequence, child: Sequence) -> None:
        """Run ``child`` (a fork of the running ``parent``) from the next step on, sharing the parent's blocks."""

    @abstractmethod
    def finish_sequences(self, seq_ids: list[str], status: SequenceStatus) -> list[Sequence]:
        """End these sequences with a finished ``status`` (abort, stop string, pruned beam) and free
        their blocks. Returns the sequences that were still unfinished."""

    @abstractmethod
    def schedule(self) -> StepPlan:
        """Pick this step's sequences and token counts, allocating (or preempting) KV blocks."""

    @abstractmethod
    def update_from_output(self, plan: StepPlan, sampled_token_ids: dict[str, list[int]]) -> list[Sequence]:
        """Advance the step's sequences; ``sampled_token_ids`` maps the id of each scheduled sequence
        that sampled to its ``num_samples`` tokens. A sequence given several tokens keeps the first
        and forks a sibling for each other one. Returns every sequence that got a token (finished
        and newly forked ones included)."""

    @abstractmethod
    def has_unfinished_sequences(self) -> bool: ...

    @property
    @abstractmethod
    def num_running_sequences(self) -> int: ...

    @property
    @abstractmethod
    def num_waiting_sequences(self) -> int: ...

    num_preemptions: int = 0
    """How many times a running sequence was preempted so far (a metric)."""

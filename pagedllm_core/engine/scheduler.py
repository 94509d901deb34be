"""The scheduler contract: each step, decide how many tokens each request runs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.request import Request, RequestStatus


@dataclass
class ScheduledRequest:
    """A request given ``num_new_tokens`` tokens to compute this step, starting at its computed tokens."""

    request: Request
    num_new_tokens: int
    block_ids: list[int]

    @property
    def samples_next_token(self) -> bool:
        """True when this step reaches the request's last token, so its logits give the next one."""
        return self.request.num_computed_tokens + self.num_new_tokens == self.request.num_tokens

    @property
    def num_samples(self) -> int:
        """Tokens drawn from this request's last logits: 0, 1, or one per sequence when it forks."""
        return 1 + self.request.num_pending_forks if self.samples_next_token else 0


@dataclass
class SchedulerOutput:
    """What one step runs; requests appear in the order the runner lays out their tokens."""

    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    block_copies: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_scheduled_tokens(self) -> int:
        return sum(item.num_new_tokens for item in self.scheduled)


class Scheduler(ABC):
    """Owns the waiting and running requests and their KV blocks.

    There are no prefill and decode phases: a request simply has ``num_tokens`` tokens of which
    ``num_computed_tokens`` are cached, and each step the scheduler grants it some of the rest.
    """

    def __init__(self, config: EngineConfig, kv_cache_manager: KVCacheManager):
        self.config = config
        self.kv_cache_manager = kv_cache_manager

    @abstractmethod
    def add_request(self, request: Request) -> None:
        """Queue a new request."""

    @abstractmethod
    def finish_requests(self, request_ids: list[str], status: RequestStatus) -> list[Request]:
        """End these sequences with a finished ``status`` (abort, stop string) and free their blocks.

        Returns the sequences that were still unfinished."""

    @abstractmethod
    def schedule(self) -> SchedulerOutput:
        """Pick this step's requests and token counts, allocating (or preempting) KV blocks."""

    @abstractmethod
    def update_from_output(self, output: SchedulerOutput, sampled_token_ids: list[list[int]]) -> list[Request]:
        """Advance the step's requests; ``sampled_token_ids`` holds ``num_samples`` tokens for each
        scheduled request that sampled, in schedule order. A request given several tokens keeps the
        first and forks a sibling for each other one. Returns every sequence that got a token
        (finished and newly forked ones included)."""

    @abstractmethod
    def has_unfinished_requests(self) -> bool: ...

    @property
    @abstractmethod
    def num_running_requests(self) -> int: ...

    @property
    @abstractmethod
    def num_waiting_requests(self) -> int: ...

    num_preemptions: int = 0
    """How many times a running request was preempted so far (a metric)."""

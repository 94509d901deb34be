"""A sequence as the scheduler and runner see it: tokens, progress and status."""

from __future__ import annotations

import enum

from pagedllm_core.sampling.constraints import ConstraintState
from pagedllm_core.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def is_finished(self) -> bool:
        return self in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH, RequestStatus.FINISHED_ABORTED)


class Request:
    """One sequence being generated; a user request with ``best_of > 1`` becomes several.

    ``num_computed_tokens`` counts the tokens whose keys/values are in the KV cache; the scheduler
    advances it as steps run and resets it to 0 when the sequence is preempted (recompute).
    The first sequence of a group prefills the prompt once; when its prompt completes it samples
    ``1 + num_pending_forks`` tokens and the scheduler forks the others from it, sharing its blocks.
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        max_output_tokens: int,
        eos_token_ids: frozenset[int],
        group_id: str | None = None,
        index: int = 0,
    ):
        self.request_id = request_id
        self.group_id = request_id if group_id is None else group_id
        self.index = index
        self.prompt_token_ids = prompt_token_ids
        self.sampling_params = sampling_params
        self.max_output_tokens = max_output_tokens
        self.eos_token_ids = eos_token_ids
        self.token_ids = list(prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_pending_forks = sampling_params.best_of - 1 if index == 0 else 0
        self.status = RequestStatus.WAITING
        self.stop_reason: int | str | None = None
        self.stop_token_ids = set(sampling_params.stop_token_ids)
        if not sampling_params.ignore_eos:
            self.stop_token_ids |= eos_token_ids
        # Where a structured-output request's output is in its automaton; the engine sets it.
        self.constraint: ConstraintState | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids) :]

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def below_min_tokens(self) -> bool:
        """True while stop tokens are still forbidden (fewer than ``min_tokens`` generated)."""
        return self.num_output_tokens < self.sampling_params.min_tokens

    def child_id(self, index: int) -> str:
        """The id of the ``index``-th sequence forked from this one."""
        return f"{self.request_id}.{index}"

    def fork(self, index: int, request_id: str | None = None) -> Request:
        """A sibling sequence with the same tokens and progress (its blocks are shared separately)."""
        child = Request(
            self.child_id(index) if request_id is None else request_id,
            self.prompt_token_ids,
            self.sampling_params,
            self.max_output_tokens,
            self.eos_token_ids,
            group_id=self.group_id,
            index=index,
        )
        child.token_ids = list(self.token_ids)
        child.num_computed_tokens = self.num_computed_tokens
        child.status = self.status
        child.constraint = None if self.constraint is None else self.constraint.copy()
        return child

    def append_output_token(self, token_id: int) -> None:
        """Add a sampled token and finish the sequence on a stop token, a completed constraint or the
        length limit."""
        self.token_ids.append(token_id)
        constraint_complete = self.constraint is not None and (
            not self.constraint.accept_token(token_id) or self.constraint.is_complete()
        )
        if token_id in self.stop_token_ids and self.num_output_tokens > self.sampling_params.min_tokens:
            self.status = RequestStatus.FINISHED_STOPPED
            self.stop_reason = token_id
        elif constraint_complete:
            self.status = RequestStatus.FINISHED_STOPPED
        elif self.num_output_tokens >= self.max_output_tokens:
            self.status = RequestStatus.FINISHED_LENGTH

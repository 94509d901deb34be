"""A request as the scheduler and runner see it: tokens, progress and status."""

from __future__ import annotations

import enum

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
    """One sequence being generated.

    ``num_computed_tokens`` counts the tokens whose keys/values are in the KV cache; the scheduler
    advances it as steps run and resets it to 0 when the request is preempted (recompute).
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        max_output_tokens: int,
        eos_token_ids: frozenset[int],
        arrival_index: int,
    ):
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.sampling_params = sampling_params
        self.max_output_tokens = max_output_tokens
        self.arrival_index = arrival_index
        self.token_ids = list(prompt_token_ids)
        self.num_computed_tokens = 0
        self.status = RequestStatus.WAITING
        self.stop_reason: int | None = None
        self._stop_token_ids = set(sampling_params.stop_token_ids)
        if not sampling_params.ignore_eos:
            self._stop_token_ids |= eos_token_ids

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

    def append_output_token(self, token_id: int) -> None:
        """Add a sampled token and finish the request if it was a stop token or the length limit."""
        self.token_ids.append(token_id)
        if token_id in self._stop_token_ids:
            self.status = RequestStatus.FINISHED_STOPPED
            self.stop_reason = token_id
        elif self.num_output_tokens >= self.max_output_tokens:
            self.status = RequestStatus.FINISHED_LENGTH

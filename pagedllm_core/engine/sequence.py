"""A sequence as the scheduler sees it: tokens, progress and status.

A user's request (``LLMEngine.add_request``) becomes one sequence, or several: ``best_of > 1``
forks siblings once the prompt is computed, and a beam search forks and prunes beams every step.
Each sequence has its own ``seq_id``; ``request_id`` names the user request it belongs to.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from pagedllm_core.engine import stopping
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.sampling.constraints import ConstraintState
from pagedllm_core.sampling_params import SamplingParams

if TYPE_CHECKING:
    from pagedllm_core.engine.beam_search import BeamSearchGroup


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"
    # A beam that lost to better candidates; never reported to the user.
    FINISHED_PRUNED = "pruned"

    @property
    def lora_int_id(self) -> int:
        """The adapter's id, 0 for the base model."""
        return 0 if self.lora_request is None else self.lora_request.lora_int_id

    @property
    def is_finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset(
    (
        SequenceStatus.FINISHED_STOPPED,
        SequenceStatus.FINISHED_LENGTH,
        SequenceStatus.FINISHED_ABORTED,
        SequenceStatus.FINISHED_PRUNED,
    )
)


class Sequence:
    """One sequence being generated.

    ``num_computed_tokens`` counts the tokens whose keys/values are in the KV cache; the scheduler
    advances it as steps run and resets it to 0 when the sequence is preempted (recompute).
    The first sequence of a ``best_of`` group prefills the prompt once; when its prompt completes it
    samples ``1 + num_pending_forks`` tokens and the scheduler forks the others from it, sharing its
    blocks. A beam (``beam_group`` set) never samples: its group picks its next token.
    """

    def __init__(
        self,
        seq_id: str,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        max_output_tokens: int,
        eos_token_ids: frozenset[int],
        request_id: str | None = None,
        index: int = 0,
        lora_request: LoRARequest | None = None,
    ):
        self.seq_id = seq_id
        self.request_id = seq_id if request_id is None else request_id
        self.index = index
        # The LoRA adapter every token of this sequence runs with (None: the base model).
        self.lora_request = lora_request
        self.prompt_token_ids = prompt_token_ids
        self.sampling_params = sampling_params
        self.max_output_tokens = max_output_tokens
        self.eos_token_ids = eos_token_ids
        self.token_ids = list(prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_pending_forks = sampling_params.best_of - 1 if index == 0 else 0
        self.status = SequenceStatus.WAITING
        self.stop_reason: int | str | None = None
        self.stop_token_ids = stopping.stop_token_ids(sampling_params, eos_token_ids)
        # Where a structured-output sequence's output is in its automaton; the engine sets it.
        self.constraint: ConstraintState | None = None
        self.beam_group: BeamSearchGroup | None = None
        # Why this sequence failed on its own (a constraint that raised); its request then fails.
        self.failure: str | None = None
        # Speculative decoding: draft tokens proposed after its last step, for the next step to verify.
        self.spec_token_ids: list[int] = []

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
    def lora_int_id(self) -> int:
        """The adapter's id, 0 for the base model."""
        return 0 if self.lora_request is None else self.lora_request.lora_int_id

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def below_min_tokens(self) -> bool:
        """True while stop tokens are still forbidden (fewer than ``min_tokens`` generated)."""
        return self.num_output_tokens < self.sampling_params.min_tokens

    @property
    def samples_own_tokens(self) -> bool:
        """False for beams, whose next token their group picks from scored candidates."""
        return self.beam_group is None

    def fork(self, seq_id: str, index: int = 0) -> Sequence:
        """A sibling with the same tokens, progress and constraint position (its blocks are shared separately)."""
        child = Sequence(
            seq_id,
            self.prompt_token_ids,
            self.sampling_params,
            self.max_output_tokens,
            self.eos_token_ids,
            request_id=self.request_id,
            index=index,
            lora_request=self.lora_request,
        )
        child.token_ids = list(self.token_ids)
        child.num_computed_tokens = self.num_computed_tokens
        child.status = self.status
        child.constraint = None if self.constraint is None else self.constraint.copy()
        child.beam_group = self.beam_group
        return child

    def append_token(self, token_id: int) -> bool:
        """Add a token and advance the constraint; returns whether the constraint accepted it and
        can still continue (False: the output is complete or went outside it)."""
        self.token_ids.append(token_id)
        if self.constraint is None:
            return True
        try:
            return self.constraint.accept_token(token_id) and not self.constraint.is_complete()
        except Exception as error:  # noqa: BLE001 - a plugin's failure belongs to this sequence alone
            self.failure = f"the output constraint failed: {type(error).__name__}: {error}"
            return False

    def append_output_token(self, token_id: int) -> None:
        """Add a sampled token and finish the sequence if it stops here (see :mod:`stopping`)."""
        constraint_open = self.append_token(token_id)
        verdict = stopping.after_token(self, token_id, constraint_open)
        if verdict is not None:
            self.status, self.stop_reason = verdict

"""Turning the scheduler's plans into the step messages the workers receive."""

from __future__ import annotations

from pagedllm_core.engine.scheduler import ScheduledSequence, StepPlan
from pagedllm_core.executor.messages import CachedSequenceData, NewSequenceData, SchedulerOutput


class StepMessageBuilder:
    """Builds each step's :class:`SchedulerOutput`, sending a sequence's static data only once.

    It remembers, per sequence the workers hold, how many of its tokens they know; each step a held
    sequence gets the tokens appended since (the sampled-token feedback) and its block table from
    the block being written on (the only one a copy-on-write may have replaced; earlier blocks never
    change). Sequences that finish between steps are reported in the next message.
    """

    def __init__(self, block_tables: dict[str, list[int]], block_size: int):
        self._block_tables = block_tables
        self._block_size = block_size
        self._num_tokens_sent: dict[str, int] = {}  # seq id -> tokens the workers know
        self._ever_sent: set[str] = set()  # held, or preempted with a seeded generator still kept
        self._finished: list[str] = []

    def finish(self, seq_ids: list[str]) -> None:
        """These sequences are finished: the next message tells the workers to forget them."""
        for seq_id in seq_ids:
            self._num_tokens_sent.pop(seq_id, None)
            if seq_id in self._ever_sent:
                self._ever_sent.discard(seq_id)
                self._finished.append(seq_id)

    def build(self, plan: StepPlan) -> SchedulerOutput:
        message = SchedulerOutput(block_copies=plan.block_copies, finished_seq_ids=self._finished)
        self._finished = []
        for sequence in plan.preempted:
            if self._num_tokens_sent.pop(sequence.seq_id, None) is not None:
                message.preempted_seq_ids.append(sequence.seq_id)
        for item in plan.scheduled:
            sequence = item.sequence
            num_samples = _num_output_rows(item)
            if sequence.seq_id in self._num_tokens_sent:
                message.cached_sequences.append(self._cached(item, num_samples))
            else:
                message.new_sequences.append(self._new(item, num_samples))
            self._num_tokens_sent[sequence.seq_id] = sequence.num_tokens
            if num_samples and sequence.constraint is not None and sequence.failure is None:
                try:
                    bitmask = sequence.constraint.allowed_token_bitmask()
                except Exception as error:  # noqa: BLE001 - a plugin's failure belongs to this sequence alone
                    sequence.failure = f"the output constraint failed: {type(error).__name__}: {error}"
                    continue
                message.allowed_token_bitmasks[sequence.seq_id] = bitmask.numpy().tobytes()
        return message

    def _new(self, item: ScheduledSequence, num_samples: int) -> NewSequenceData:
        sequence = item.sequence
        self._ever_sent.add(sequence.seq_id)
        group = sequence.beam_group
        return NewSequenceData(
            seq_id=sequence.seq_id,
            prompt_token_ids=sequence.prompt_token_ids,
            output_token_ids=sequence.output_token_ids,
            sampling_params=sequence.sampling_params,
            stop_token_ids=sorted(sequence.stop_token_ids),
            block_ids=list(self._block_tables[sequence.seq_id]),
            num_computed_tokens=sequence.num_computed_tokens,
            num_new_tokens=item.num_new_tokens,
            num_samples=num_samples,
            index=sequence.index,
            num_beam_candidates=0 if group is None else group.num_candidates,
            lora_request=sequence.lora_request,
        )

    def _cached(self, item: ScheduledSequence, num_samples: int) -> CachedSequenceData:
        sequence = item.sequence
        start = sequence.num_computed_tokens // self._block_size
        return CachedSequenceData(
            seq_id=sequence.seq_id,
            new_token_ids=sequence.token_ids[self._num_tokens_sent[sequence.seq_id] :],
            block_ids_start=start,
            new_block_ids=self._block_tables[sequence.seq_id][start:],
            num_computed_tokens=sequence.num_computed_tokens,
            num_new_tokens=item.num_new_tokens,
            num_samples=num_samples,
            spec_token_ids=item.spec_token_ids,
        )


def _num_output_rows(item: ScheduledSequence) -> int:
    """Rows of logits the worker turns into output for this sequence: its samples, or one row of beam candidates."""
    if item.sequence.beam_group is not None:
        return int(item.reaches_last_token)
    return item.num_samples

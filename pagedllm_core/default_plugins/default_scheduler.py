"""The ``default`` scheduler: first-come-first-served continuous batching with recompute preemption."""

from __future__ import annotations

from collections import deque

from pagedllm_core.engine.sequence import Sequence, SequenceStatus
from pagedllm_core.executor.messages import forked_seq_id
from pagedllm_core.engine.scheduler import ScheduledSequence, Scheduler, StepPlan
from pagedllm_core.hookspecs import hookimpl
from pagedllm_core.spec_decode.scheduling import (
    advance_verified,
    drafts_to_verify,
    free_uncomputed_blocks,
    num_lookahead_slots,
)


class ContinuousBatchingScheduler(Scheduler):
    """Runs every running sequence each step, then admits waiting ones while budget and blocks allow.

    Running sequences get their remaining tokens (one when decoding, a chunk of the prompt when
    prefilling) under ``max_num_batched_tokens``. A waiting sequence starts after the blocks of its
    longest prefix found in the prefix cache. When the pool cannot hold a running sequence's next
    tokens, the most recently arrived running sequence is preempted: its blocks are freed and it goes
    back to the front of the queue to be recomputed later, which gives identical results (and,
    with prefix caching, usually finds its own freed blocks still cached).
    """

    def __init__(self, config, kv_cache_manager):
        super().__init__(config, kv_cache_manager)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def num_running_sequences(self) -> int:
        return len(self.running)

    @property
    def num_waiting_sequences(self) -> int:
        return len(self.waiting)

    def has_unfinished_sequences(self) -> bool:
        return bool(self.waiting or self.running)

    def add_sequence(self, sequence: Sequence) -> None:
        self.waiting.append(sequence)

    def add_forked_sequence(self, parent: Sequence, child: Sequence) -> None:
        self.kv_cache_manager.fork(parent, child)
        self.running.append(child)

    def finish_sequences(self, seq_ids: list[str], status: SequenceStatus) -> list[Sequence]:
        wanted = set(seq_ids)
        finished = [r for r in (*self.running, *self.waiting) if r.seq_id in wanted]
        for sequence in finished:
            sequence.status = status
            self.kv_cache_manager.free(sequence)
        self.running = [r for r in self.running if r.seq_id not in wanted]
        self.waiting = deque(r for r in self.waiting if r.seq_id not in wanted)
        return finished

    def schedule(self) -> StepPlan:
        plan = StepPlan()
        token_budget = self.config.max_num_batched_tokens

        index = 0
        while index < len(self.running) and token_budget > 0:
            sequence = self.running[index]
            num_new_tokens = min(sequence.num_tokens - sequence.num_computed_tokens, token_budget)
            if num_new_tokens == 0:  # a beam waiting for its group to pick its next token
                index += 1
                continue
            spec_token_ids = drafts_to_verify(sequence, num_new_tokens, token_budget)
            num_new_tokens += len(spec_token_ids)
            num_slots = num_new_tokens + num_lookahead_slots(
                self.config.speculative_config, sequence, sequence.num_computed_tokens + num_new_tokens
            )
            while not self.kv_cache_manager.allocate_slots(sequence, num_slots):
                victim = self.running.pop()
                self._preempt(victim)
                plan.preempted.append(victim)
                if victim is sequence:
                    break
            else:
                plan.scheduled.append(ScheduledSequence(sequence, num_new_tokens, spec_token_ids))
                token_budget -= num_new_tokens
                index += 1

        # Admit new work only when nothing had to be preempted: the pool is known to be tight otherwise.
        # A sequence whose LoRA adapter would be one too many this step waits, in place, for a later one.
        lora_ids = {sequence.lora_int_id for sequence in self.running} - {0}
        deferred: list[Sequence] = []
        while not plan.preempted and self.waiting and token_budget > 0 and len(self.running) < self.config.max_num_seqs:
            sequence = self.waiting[0]
            if sequence.lora_int_id and sequence.lora_int_id not in lora_ids and len(lora_ids) >= self.config.max_loras:
                deferred.append(self.waiting.popleft())
                continue
            cached_block_ids = self.kv_cache_manager.find_cached_blocks(sequence)
            num_cached_tokens = len(cached_block_ids) * self.kv_cache_manager.block_size
            num_new_tokens = sequence.num_tokens - num_cached_tokens
            if num_new_tokens > token_budget:
                if not self.config.enable_chunked_prefill:
                    break
                num_new_tokens = token_budget
            num_slots = num_new_tokens + num_lookahead_slots(
                self.config.speculative_config, sequence, num_cached_tokens + num_new_tokens
            )
            if not self.kv_cache_manager.allocate_slots(sequence, num_slots, cached_block_ids):
                break
            sequence.num_computed_tokens = num_cached_tokens
            self.waiting.popleft()
            sequence.status = SequenceStatus.RUNNING
            self.running.append(sequence)
            plan.scheduled.append(ScheduledSequence(sequence, num_new_tokens))
            token_budget -= num_new_tokens
            if sequence.lora_int_id:
                lora_ids.add(sequence.lora_int_id)
        self.waiting.extendleft(reversed(deferred))

        plan.block_copies = self.kv_cache_manager.take_pending_copies()
        return plan

    def _preempt(self, sequence: Sequence) -> None:
        self.num_preemptions += 1
        self.kv_cache_manager.free(sequence)
        sequence.num_computed_tokens = 0
        sequence.spec_token_ids = []
        sequence.status = SequenceStatus.PREEMPTED
        self.waiting.appendleft(sequence)

    def update_from_output(self, plan: StepPlan, sampled_token_ids: dict[str, list[int]]) -> list[Sequence]:
        progressed = []
        for item in plan.scheduled:
            sequence = item.sequence
            sequence.num_computed_tokens += item.num_new_tokens
            tokens = sampled_token_ids.get(sequence.seq_id)
            if item.spec_token_ids:
                # A verified run: every token is the sequence's own (it never forks while decoding).
                advance_verified(sequence, len(item.spec_token_ids), tokens or [])
                if tokens:
                    progressed.append(sequence)
                tokens = []
            if self.config.speculative_config is not None:
                free_uncomputed_blocks(self.kv_cache_manager, sequence)
            if not tokens:
                continue
            first_token, *sibling_tokens = tokens
            # Siblings share every block computed so far; each then diverges with its own first token.
            siblings = [
                sequence.fork(forked_seq_id(sequence.seq_id, index), index) for index in range(1, len(sibling_tokens) + 1)
            ]
            for sibling, token_id in zip(siblings, sibling_tokens):
                self.add_forked_sequence(sequence, sibling)
                sibling.append_output_token(token_id)
            sequence.num_pending_forks = 0
            sequence.append_output_token(first_token)
            progressed.extend([sequence, *siblings])
        for sequence in progressed:
            if sequence.is_finished:
                self.kv_cache_manager.free(sequence)
        if any(sequence.is_finished for sequence in progressed):
            self.running = [r for r in self.running if not r.is_finished]
        return progressed


@hookimpl
def register_schedulers(register):
    register("default", ContinuousBatchingScheduler, "FCFS continuous batching, chunked prefill, recompute preemption")

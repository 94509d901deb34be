"""How well a run used its KV cache: pool usage, slots allocated but unused, concurrent sequences.

Waste is measured as the PagedAttention paper measures it: slots allocated to sequences that hold
no token (a block's tail not yet filled), over all allocated slots, summed over every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class KVUsageTally:
    """Observes an engine after each step and keeps the sums and peaks of its KV cache."""

    num_steps: int = 0
    usage_sum: float = 0.0
    peak_usage: float = 0.0
    num_allocated_slots: int = 0  # summed over steps
    num_used_slots: int = 0  # summed over steps
    peak_running_sequences: int = 0

    def observe(self, engine) -> None:
        """Record one step of ``engine`` (an :class:`~pagedllm_core.engine.llm_engine.LLMEngine`)."""
        stats = engine.kv_cache_stats()
        self.num_steps += 1
        self.usage_sum += stats.usage
        self.peak_usage = max(self.peak_usage, stats.usage)
        self.num_allocated_slots += stats.num_referenced_blocks * stats.block_size
        self.num_used_slots += stats.num_computed_tokens
        self.peak_running_sequences = max(self.peak_running_sequences, engine.num_running_requests)

    @property
    def mean_usage(self) -> float:
        """Mean fraction of the KV pool in use over the steps."""
        return self.usage_sum / self.num_steps if self.num_steps else 0.0

    @property
    def waste(self) -> float:
        """Fraction of allocated slots that held no token, over the whole run."""
        if not self.num_allocated_slots:
            return 0.0
        return 1 - self.num_used_slots / self.num_allocated_slots


def paged_slots_per_sequence(sequence_lengths: Sequence[int], block_size: int) -> float:
    """Mean KV slots a sequence holds at its full length when blocks are allocated on demand."""
    return sum(-(-length // block_size) * block_size for length in sequence_lengths) / len(sequence_lengths)


def static_batch_slots_per_sequence(prompt_lengths: Sequence[int], output_len: int, batch_size: int) -> float:
    """Mean KV slots a sequence holds in static batches with left padding: every sequence of a batch
    keeps a slot for each position of the batch's longest prompt plus every output token."""
    num_slots = 0
    for start in range(0, len(prompt_lengths), batch_size):
        batch = prompt_lengths[start : start + batch_size]
        num_slots += len(batch) * (max(batch) + output_len)
    return num_slots / len(prompt_lengths)

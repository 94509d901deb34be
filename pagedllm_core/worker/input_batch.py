"""The worker's persistent input batch: every held sequence's tokens, blocks and sampling settings.

Sequences arrive once (:class:`NewSequenceData`) and are then updated in place from each step's
deltas, so preparing a step gathers rows of preallocated tensors instead of rebuilding them from
Python lists. Each held sequence owns a slot: a row of the token, block-table and sampling tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pagedllm_core.executor.messages import CachedSequenceData, NewSequenceData
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.sampling_params import SamplingParams


@dataclass
class HeldSequence:
    """What the worker knows of one sequence besides its tensor rows."""

    seq_id: str
    slot: int
    num_prompt_tokens: int
    num_tokens: int
    num_computed_tokens: int
    sampling_params: SamplingParams
    stop_token_ids: list[int]
    index: int
    num_beam_candidates: int
    num_blocks: int
    # Speculative decoding: the draft tokens this step verifies (written after the sequence's tokens).
    spec_token_ids: list[int] = field(default_factory=list)
    # Only for sequences with repetition, frequency or presence penalties: [vocab] statistics.
    prompt_token_mask: torch.Tensor | None = None
    output_token_counts: torch.Tensor | None = None
    lora_request: LoRARequest | None = None

    @property
    def num_output_tokens(self) -> int:
        return self.num_tokens - self.num_prompt_tokens

    @property
    def below_min_tokens(self) -> bool:
        return self.num_output_tokens < self.sampling_params.min_tokens

    def output_token_ids(self, token_ids: torch.Tensor) -> list[int]:
        return token_ids[self.slot, self.num_prompt_tokens : self.num_tokens].tolist()


class InputBatch:
    """Slots of per-sequence tensors on the CPU, grown by doubling when full."""

    def __init__(self, max_model_len: int, max_blocks_per_sequence: int, vocab_size: int, capacity: int = 64):
        self.max_model_len = max_model_len
        self.max_blocks_per_sequence = max_blocks_per_sequence
        self.vocab_size = vocab_size
        self.sequences: dict[str, HeldSequence] = {}
        self._free_slots: list[int] = []
        self.capacity = 0
        self.token_ids = torch.zeros(0, max_model_len, dtype=torch.int64)
        self.block_table = torch.zeros(0, max_blocks_per_sequence, dtype=torch.int32)
        self.temperature = torch.zeros(0)
        self.top_p = torch.zeros(0)
        self.min_p = torch.zeros(0)
        self.top_k = torch.zeros(0, dtype=torch.int64)
        self.lora_int_ids = torch.zeros(0, dtype=torch.int64)  # 0: the base model
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        def grown(tensor: torch.Tensor) -> torch.Tensor:
            bigger = tensor.new_zeros((capacity, *tensor.shape[1:]))
            bigger[: tensor.shape[0]] = tensor
            return bigger

        self.token_ids, self.block_table = grown(self.token_ids), grown(self.block_table)
        self.temperature, self.top_p, self.min_p, self.top_k = (
            grown(self.temperature), grown(self.top_p), grown(self.min_p), grown(self.top_k)
        )
        self.lora_int_ids = grown(self.lora_int_ids)
        self._free_slots.extend(range(capacity - 1, self.capacity - 1, -1))
        self.capacity = capacity

    def add(self, data: NewSequenceData) -> HeldSequence:
        if not self._free_slots:
            self._grow(2 * self.capacity)
        slot = self._free_slots.pop()
        tokens = [*data.prompt_token_ids, *data.output_token_ids]
        self.token_ids[slot, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        self.block_table[slot, : len(data.block_ids)] = torch.tensor(data.block_ids, dtype=torch.int32)
        params = data.sampling_params
        self.temperature[slot] = params.temperature
        self.top_p[slot] = params.top_p
        self.min_p[slot] = params.min_p
        self.top_k[slot] = params.top_k if params.top_k > 0 else self.vocab_size
        self.lora_int_ids[slot] = 0 if data.lora_request is None else data.lora_request.lora_int_id
        held = HeldSequence(
            seq_id=data.seq_id,
            slot=slot,
            num_prompt_tokens=len(data.prompt_token_ids),
            num_tokens=len(tokens),
            num_computed_tokens=data.num_computed_tokens,
            sampling_params=params,
            stop_token_ids=data.stop_token_ids,
            index=data.index,
            num_beam_candidates=data.num_beam_candidates,
            num_blocks=len(data.block_ids),
            lora_request=data.lora_request,
        )
        if params.has_penalties:
            held.prompt_token_mask = self._counts(data.prompt_token_ids) > 0
            held.output_token_counts = self._counts(data.output_token_ids)
        self.sequences[data.seq_id] = held
        return held

    def update_all(self, deltas: list[CachedSequenceData]) -> list[HeldSequence]:
        """Apply a step's deltas to the sequences held already: every new token, draft token and block
        id of the step is written with one indexed store per tensor, not a few per sequence."""
        token_writes: tuple[list[int], list[int], list[int]] = ([], [], [])  # slot, position, token id
        block_writes: tuple[list[int], list[int], list[int]] = ([], [], [])  # slot, table index, block id
        updated = []
        for data in deltas:
            held = self.sequences[data.seq_id]
            new_tokens = data.new_token_ids
            if new_tokens:
                _extend(token_writes, held.slot, held.num_tokens, new_tokens)
                held.num_tokens += len(new_tokens)
                if held.output_token_counts is not None:
                    ids = torch.tensor(new_tokens, dtype=torch.int64)
                    held.output_token_counts.index_add_(0, ids, torch.ones_like(ids))
            end = data.block_ids_start + len(data.new_block_ids)
            _extend(block_writes, held.slot, data.block_ids_start, data.new_block_ids)
            held.num_blocks = end
            held.num_computed_tokens = data.num_computed_tokens
            held.spec_token_ids = data.spec_token_ids
            _extend(token_writes, held.slot, held.num_tokens, data.spec_token_ids)
            updated.append(held)
        for tensor, (slots, columns, values) in ((self.token_ids, token_writes), (self.block_table, block_writes)):
            if values:
                tensor[slots, columns] = torch.tensor(values, dtype=tensor.dtype)
        return updated

    def remove(self, seq_id: str) -> None:
        held = self.sequences.pop(seq_id, None)
        if held is not None:
            self._free_slots.append(held.slot)

    def _counts(self, token_ids: list[int]) -> torch.Tensor:
        counts = torch.zeros(self.vocab_size, dtype=torch.int64)
        if token_ids:
            ids = torch.tensor(token_ids, dtype=torch.int64)
            counts.index_add_(0, ids, torch.ones_like(ids))
        return counts


def _extend(writes: tuple[list[int], list[int], list[int]], slot: int, start: int, values: list[int]) -> None:
    """Queue ``values`` for the columns from ``start`` on of row ``slot``."""
    slots, columns, queued = writes
    slots.extend([slot] * len(values))
    columns.extend(range(start, start + len(values)))
    queued.extend(values)

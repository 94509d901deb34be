"""A draft model in the worker: its own weights, attention backend and paged KV cache.

The draft's cache has a block for every block of the target's pool and is addressed through the
target's block tables, so the scheduler's allocation, copy-on-write and rollback cover both. It keeps
the same invariant as the target: keys and values for every computed token. Each step it catches up
on the tokens the target computed and kept (the accepted ones) plus the step's new token, then
proposes greedily, one token per forward pass, writing only into the lookahead slots the scheduler
reserved for it. The keys and values it wrote for drafts the target then accepts are kept, so it catches
up only from the first position it has not computed (the last accepted draft it did not write, or the
target's own token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.model.native_decode import NativeDecoder, forward_prepared_step
from pagedllm_core.sampling.sampler import argmax_rows
from pagedllm_core.spec_decode.speculator import StepEntry
from pagedllm_core.worker.kv_cache import KVCacheShape
from pagedllm_core.worker.model_runner import ModelRunner


@dataclass
class _DraftRows:
    """Where a sequence's draft inputs start, in the shape the runner's input preparation reads."""

    slot: int
    num_computed_tokens: int
    num_blocks: int


@dataclass
class _Proposal:
    """A sequence the draft proposes for: its length once its new token is in, and how many drafts fit."""

    seq_id: str
    slot: int
    num_blocks: int
    length: int
    budget: int


@dataclass
class LoadedDraft:
    """The loaded draft model and the per-block shape its KV cache needs."""

    model: torch.nn.Module
    attention: AttentionBackend
    cache_shape: KVCacheShape


class DraftModelProposer:
    """Proposes with a draft model over its own KV cache (see the module docstring)."""

    def __init__(
        self, draft: LoadedDraft, kv_cache: torch.Tensor, max_model_len: int, native_decoder: NativeDecoder | None
    ):
        self.model = draft.model
        self.attention = draft.attention
        self.native_decoder = native_decoder
        # seq id -> (end, written, blocks) after the last step: see _first_to_compute.
        self._computed: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        self.kv_cache = kv_cache
        self.kv_caches = list(kv_cache.unbind(0))
        self.max_model_len = max_model_len

    def copy_blocks(self, block_copies: list[tuple[int, int]]) -> None:
        if block_copies:
            self.attention.copy_blocks(self.kv_cache, block_copies)

    def _last_token_ids(self, runner: ModelRunner, rows: list[tuple[_DraftRows, int, int]]) -> list[int]:
        """Run the draft over ``rows`` (start, token count) and take the argmax after each row's last token."""
        input_ids, positions, metadata, query_start = runner._prepare_inputs(rows)
        self.attention.prepare(metadata)
        hidden_states = forward_prepared_step(
            self.model, self.native_decoder, input_ids, positions, self.kv_caches, metadata
        )
        logits = self.model.compute_logits(hidden_states[[end - 1 for end in query_start[1:]]])
        return argmax_rows(logits[:, : runner.vocab_size]).tolist()

    def propose(self, runner: ModelRunner, entries: list[StepEntry], num_tokens: int) -> dict[str, list[int]]:
        block_size = runner.block_size
        catch_up: list[tuple[_DraftRows, int, int]] = []
        proposing: list[tuple[int, _Proposal]] = []
        computed, self._computed = self._computed, {}
        for held, num_new_tokens, run, gets_drafts in entries:
            num_accepted = max(len(run) - 1, 0) if held.spec_token_ids else 0
            num_inputs = num_new_tokens - len(held.spec_token_ids) + num_accepted
            start = held.num_computed_tokens
            # Slots this sequence may write: its blocks, within the context.
            room = min(held.num_blocks * block_size, self.max_model_len)
            length = start + num_inputs + 1  # once the new token is in
            with_new_token = bool(run) and length <= room
            end = start + num_inputs + with_new_token
            block_table = runner.batch.block_table[held.slot]
            first = _first_to_compute(computed.get(held.seq_id), start, num_accepted, block_table, block_size)
            if end > first:
                catch_up.append((_DraftRows(held.slot, first, held.num_blocks), end - first, 0))
            self._computed[held.seq_id] = (end, 0, _block_ids(block_table, block_size, end - 1, end))
            # The k-th draft is proposed without being written, so k drafts need k - 1 slots past the new token.
            budget = min(num_tokens, room - length + 1)
            if gets_drafts and with_new_token and budget > 0:
                proposal = _Proposal(held.seq_id, held.slot, held.num_blocks, length, budget)
                proposing.append((len(catch_up) - 1, proposal))
        if not catch_up:
            return {}
        first_drafts = self._last_token_ids(runner, catch_up)
        drafts = {info.seq_id: [first_drafts[index]] for index, info in proposing}
        active = [info for _, info in proposing]
        for step in range(1, num_tokens):
            active = [info for info in active if info.budget > step]
            if not active:
                break
            rows = []
            for info in active:
                position = info.length + step - 1
                runner.batch.token_ids[info.slot, position] = drafts[info.seq_id][-1]
                rows.append((_DraftRows(info.slot, position, info.num_blocks), 1, 0))
            for info, token_id in zip(active, self._last_token_ids(runner, rows)):
                drafts[info.seq_id].append(token_id)
        for _, info in proposing:
            written = len(drafts[info.seq_id]) - 1
            blocks = _block_ids(runner.batch.block_table[info.slot], block_size, info.length - 1, info.length + written)
            self._computed[info.seq_id] = (info.length, written, blocks)
        return drafts


def _block_ids(block_table: torch.Tensor, block_size: int, begin: int, end: int) -> tuple[int, ...]:
    """The ids of the blocks that hold positions ``begin`` to ``end - 1`` in a sequence's ``block_table``."""
    if begin >= end:
        return ()
    return tuple(block_table[begin // block_size : (end - 1) // block_size + 1].tolist())


def _first_to_compute(computed, start: int, num_accepted: int, block_table: torch.Tensor, block_size: int) -> int:
    """The first position of a sequence's inputs this step whose keys and values the draft lacks.

    ``computed`` is what the draft's last step left, ``(end, written, blocks)``: every position before ``end``
    (the step's new token, the last of them, included) and the next ``written`` drafts, and ``blocks`` the
    blocks from the new token's to the last draft's. The new token's and the accepted drafts' keys and values
    are still right in the blocks that are still the sequence's: they are lookahead slots, whose block may be
    freed after the step and come back as another. A sequence that does not continue that step (new, or
    recomputed after preemption) starts at ``start``."""
    if computed is None:
        return start
    end, written, blocks = computed
    if not start <= end <= start + 1:
        return start
    kept = end + min(written, num_accepted)
    blocks_now = _block_ids(block_table, block_size, end - 1, kept)
    same = next((i for i, (now, then) in enumerate(zip(blocks_now, blocks)) if now != then), len(blocks_now))
    # Positions before the first block that changed are still the draft's.
    return max(start, min(kept, ((end - 1) // block_size + same) * block_size))

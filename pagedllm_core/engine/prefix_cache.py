"""Automatic prefix caching: full KV blocks named by a chained hash of their tokens, found again by name."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NewType

from pagedllm_core.engine.sequence import Sequence

BlockHash = NewType("BlockHash", bytes)
"""SHA-256 digest naming a full block's contents: its tokens, every token before them, and the
sequence's extra keys (cache salt, LoRA adapter). Equal hashes mean equal keys and values in the block."""


def hash_extra_keys(extra_keys: Mapping[str, str | None]) -> BlockHash:
    """The root of a hash chain: everything besides tokens that decides what a block holds.

    Requests whose extra keys differ (another ``cache_salt``) start different chains and so never
    share a block.
    """
    encoded = json.dumps(["pagedllm prefix cache", extra_keys], sort_keys=True).encode()
    return BlockHash(hashlib.sha256(encoded).digest())


def sequence_extra_keys(sequence: Sequence) -> dict[str, str | None]:
    """The sequence's extra keys: its ``cache_salt`` and, for a LoRA adapter, the adapter's identity
    (an adapter changes every layer's keys and values, so its blocks are never another's)."""
    extra_keys = {"cache_salt": sequence.sampling_params.cache_salt}
    lora = sequence.lora_request
    if lora is not None:
        extra_keys["lora"] = f"{lora.lora_int_id}:{lora.lora_name}:{lora.lora_path}"
    return extra_keys


def hash_block_tokens(parent_hash: BlockHash, token_ids: list[int]) -> BlockHash:
    """The hash of a full block: SHA-256 over its parent's hash (fixed length) and its token ids."""
    return BlockHash(hashlib.sha256(parent_hash + array("q", token_ids).tobytes()).digest())


def reads_prefix_cache(sequence: Sequence) -> bool:
    """Whether the sequence may start from cached blocks: not when it asks for prompt logprobs,
    which need the logits at every prompt position."""
    return sequence.sampling_params.prompt_logprobs is None


@dataclass
class PrefixCacheStats:
    """Prefix cache lookups in tokens, counted once per admitted sequence (and once per resume)."""

    num_queried_tokens: int = 0
    num_hit_tokens: int = 0
    num_cached_blocks: int = 0  # blocks findable now, held or evictable

    @property
    def hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_queried_tokens if self.num_queried_tokens else 0.0


class PrefixCache:
    """Finds the KV blocks a new sequence's prompt shares with earlier sequences.

    Block ``i`` of a sequence is named ``hash_block_tokens(name of block i - 1, its tokens)``; block
    0's parent is the root hash of the sequence's extra keys. A block is named once every one of its
    tokens is computed (``cache_full_blocks``), so only complete, never-again-written blocks are
    findable. Its name outlives the sequence: the block sits in the pool's free queue, evictable
    yet findable, until the pool hands it out again and ``evict`` drops the name.

    Each sequence's hashes are computed once, as its blocks fill, and kept until ``forget``.
    """

    def __init__(self, block_size: int):
        self.block_size = block_size
        self._block_by_hash: dict[BlockHash, int] = {}
        self._hash_by_block: dict[int, BlockHash] = {}
        self._block_hashes: dict[str, list[BlockHash]] = {}  # sequence id -> hashes of its full blocks
        self._num_named_blocks: dict[str, int] = {}  # sequence id -> leading table blocks already offered
        self._num_queried_tokens = 0
        self._num_hit_tokens = 0

    def stats(self) -> PrefixCacheStats:
        return PrefixCacheStats(self._num_queried_tokens, self._num_hit_tokens, len(self._block_by_hash))

    def block_hashes(self, sequence: Sequence, num_blocks: int) -> list[BlockHash]:
        """Hashes of the sequence's first ``num_blocks`` blocks, which must be full of tokens."""
        hashes = self._block_hashes.setdefault(sequence.seq_id, [])
        if len(hashes) < num_blocks:
            block_size = self.block_size
            parent = hashes[-1] if hashes else hash_extra_keys(sequence_extra_keys(sequence))
            for index in range(len(hashes), num_blocks):
                parent = hash_block_tokens(parent, sequence.token_ids[index * block_size : (index + 1) * block_size])
                hashes.append(parent)
        return hashes[:num_blocks]

    def find(self, sequence: Sequence) -> list[int]:
        """Block ids of the sequence's longest cached prefix of whole blocks.

        The last token is never covered: its logits must be computed to sample the next token.
        """
        if not reads_prefix_cache(sequence):
            return []
        hits = []
        for block_hash in self.block_hashes(sequence, (sequence.num_tokens - 1) // self.block_size):
            block_id = self._block_by_hash.get(block_hash)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def record_lookup(self, sequence: Sequence, num_hit_blocks: int) -> None:
        """Count an admitted sequence's lookup in the stats."""
        if reads_prefix_cache(sequence):
            self._num_queried_tokens += sequence.num_tokens
            self._num_hit_tokens += num_hit_blocks * self.block_size

    def cache_full_blocks(self, sequence: Sequence, block_table: list[int]) -> None:
        """Name the blocks of ``block_table`` that have become full of computed tokens since last time."""
        num_full_blocks = sequence.num_computed_tokens // self.block_size
        num_named = self._num_named_blocks.get(sequence.seq_id, 0)
        if num_full_blocks <= num_named:
            return
        hashes = self.block_hashes(sequence, num_full_blocks)
        for index in range(num_named, num_full_blocks):
            # A block computed twice (two sequences admitted together) keeps its first name only.
            if hashes[index] not in self._block_by_hash:
                self._block_by_hash[hashes[index]] = block_table[index]
                self._hash_by_block[block_table[index]] = hashes[index]
        self._num_named_blocks[sequence.seq_id] = num_full_blocks

    def evict(self, block_ids: list[int]) -> None:
        """Drop the names of blocks the pool hands out again: their contents are about to change."""
        for block_id in block_ids:
            block_hash = self._hash_by_block.pop(block_id, None)
            if block_hash is not None:
                del self._block_by_hash[block_hash]

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """The child has the parent's tokens and blocks, so it has the parent's hashes too."""
        self._block_hashes[child.seq_id] = list(self._block_hashes.get(parent.seq_id, []))
        self._num_named_blocks[child.seq_id] = self._num_named_blocks.get(parent.seq_id, 0)

    def forget(self, sequence: Sequence) -> None:
        """Drop the sequence's hashes (it finished, or was preempted and will look itself up again)."""
        self._block_hashes.pop(sequence.seq_id, None)
        self._num_named_blocks.pop(sequence.seq_id, None)

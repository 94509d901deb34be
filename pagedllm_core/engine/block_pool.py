"""The pool of KV cache blocks: free queue and reference counts."""

from __future__ import annotations

from collections import OrderedDict


class BlockPool:
    """Hands out block ids from a fixed pool; a block returns to the pool when its ref count hits zero.

    Sequences that share a block (forked prompts, beams, prefix cache hits) each hold a reference to
    it. The free queue is in eviction order, least recently freed first: ``allocate`` takes from
    its front and ``release`` appends to its back, so a freed block that the prefix cache still
    names survives as long as possible, and ``acquire`` can take it back out of the queue.
    """

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        # An ordered set: O(1) removal from the middle when a cache hit reclaims a free block.
        self._free_block_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free_block_ids)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free_block_ids)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self._free_block_ids)

    def allocate(self, num_blocks: int) -> list[int]:
        """Take the ``num_blocks`` least recently freed blocks, each with one reference."""
        if num_blocks > len(self._free_block_ids):
            raise RuntimeError(f"asked for {num_blocks} blocks with only {len(self._free_block_ids)} free")
        block_ids = [self._free_block_ids.popitem(last=False)[0] for _ in range(num_blocks)]
        for block_id in block_ids:
            self.ref_counts[block_id] = 1
        return block_ids

    def share(self, block_ids: list[int]) -> None:
        """Add one reference to each block (another sequence now reads it too)."""
        for block_id in block_ids:
            assert self.ref_counts[block_id] > 0, f"block {block_id} is free and cannot be shared"
            self.ref_counts[block_id] += 1

    def acquire(self, block_ids: list[int]) -> None:
        """Add one reference to each block, taking free ones out of the free queue (prefix cache hits)."""
        for block_id in block_ids:
            if self.ref_counts[block_id] == 0:
                del self._free_block_ids[block_id]
            self.ref_counts[block_id] += 1

    def release(self, block_ids: list[int]) -> None:
        """Drop one reference to each block; blocks nobody references join the back of the free queue."""
        for block_id in block_ids:
            assert self.ref_counts[block_id] > 0, f"block {block_id} released more often than taken"
            self.ref_counts[block_id] -= 1
            if self.ref_counts[block_id] == 0:
                self._free_block_ids[block_id] = None

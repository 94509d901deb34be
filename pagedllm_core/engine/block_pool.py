"""The pool of KV cache blocks: free list and reference counts."""

from __future__ import annotations

from collections import deque


class BlockPool:
    """Hands out block ids from a fixed pool; a block returns to the pool when its ref count hits zero.

    Sequences that share a block (forked prompts, beams) each hold a reference to it.
    """

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        self._free_block_ids: deque[int] = deque(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free_block_ids)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free_block_ids)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self._free_block_ids)

    def allocate(self, num_blocks: int) -> list[int]:
        """Take ``num_blocks`` free blocks, each with one reference."""
        if num_blocks > len(self._free_block_ids):
            raise RuntimeError(f"asked for {num_blocks} blocks with only {len(self._free_block_ids)} free")
        block_ids = [self._free_block_ids.popleft() for _ in range(num_blocks)]
        for block_id in block_ids:
            self.ref_counts[block_id] = 1
        return block_ids

    def share(self, block_ids: list[int]) -> None:
        """Add one reference to each block (another sequence now reads it too)."""
        for block_id in block_ids:
            assert self.ref_counts[block_id] > 0, f"block {block_id} is free and cannot be shared"
            self.ref_counts[block_id] += 1

    def release(self, block_ids: list[int]) -> None:
        """Drop one reference to each block; blocks nobody references go back to the pool."""
        for block_id in block_ids:
            assert self.ref_counts[block_id] > 0, f"block {block_id} released more often than taken"
            self.ref_counts[block_id] -= 1
            if self.ref_counts[block_id] == 0:
                self._free_block_ids.append(block_id)

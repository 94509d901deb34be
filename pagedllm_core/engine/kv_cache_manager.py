"""Block tables per request on top of the block pool, with copy-on-write for shared blocks."""

from __future__ import annotations

from pagedllm_core.engine.block_pool import BlockPool
from pagedllm_core.engine.request import Request


class KVCacheManager:
    """Gives each request the blocks its tokens need, as they are needed.

    A request's block table lists its blocks in token order: token ``p`` lives in
    ``block_table[p // block_size]`` at offset ``p % block_size``. Writing into a block that
    another request also references copies it first (copy-on-write); the copies a step needs are
    collected for the model runner, which performs them before running the model.
    """

    def __init__(self, num_blocks: int, block_size: int):
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.block_tables: dict[str, list[int]] = {}
        self._pending_copies: list[tuple[int, int]] = []

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_used_blocks(self) -> int:
        return self.pool.num_used_blocks

    @property
    def usage(self) -> float:
        """Fraction of the pool in use."""
        return self.pool.num_used_blocks / self.pool.num_blocks

    def blocks_for_tokens(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate_slots(self, request: Request, num_new_tokens: int) -> bool:
        """Make room for ``num_new_tokens`` after the request's computed tokens; False if the pool is short."""
        block_table = self.block_tables.setdefault(request.request_id, [])
        num_needed = self.blocks_for_tokens(request.num_computed_tokens + num_new_tokens) - len(block_table)
        write_block_index = request.num_computed_tokens // self.block_size
        needs_copy = write_block_index < len(block_table) and self.pool.ref_counts[block_table[write_block_index]] > 1
        if not self.pool.can_allocate(max(num_needed, 0) + needs_copy):
            return False
        if needs_copy:
            shared_block = block_table[write_block_index]
            (private_block,) = self.pool.allocate(1)
            self.pool.release([shared_block])
            block_table[write_block_index] = private_block
            self._pending_copies.append((shared_block, private_block))
        if num_needed > 0:
            block_table.extend(self.pool.allocate(num_needed))
        return True

    def fork(self, parent: Request, child: Request) -> None:
        """Let ``child`` share every block ``parent`` holds (e.g. a prompt sampled n times)."""
        block_table = self.block_tables.get(parent.request_id, [])
        self.pool.share(block_table)
        self.block_tables[child.request_id] = list(block_table)

    def free(self, request: Request) -> None:
        """Release the request's blocks (on finish, abort or preemption)."""
        self.pool.release(self.block_tables.pop(request.request_id, []))

    def take_pending_copies(self) -> list[tuple[int, int]]:
        """The (source, destination) block copies the runner must do before this step's forward."""
        copies, self._pending_copies = self._pending_copies, []
        return copies

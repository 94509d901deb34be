"""Block tables per sequence on top of the block pool, with copy-on-write for shared blocks."""

from __future__ import annotations

from pagedllm_core.engine.block_pool import BlockPool
from pagedllm_core.engine.prefix_cache import PrefixCache, PrefixCacheStats
from pagedllm_core.engine.sequence import Sequence


class KVCacheManager:
    """Gives each sequence the blocks its tokens need, as they are needed.

    A sequence's block table lists its blocks in token order: token ``p`` lives in
    ``block_table[p // block_size]`` at offset ``p % block_size``. Writing into a block that
    another sequence also references copies it first (copy-on-write); the copies a step needs are
    collected for the model runner, which performs them before running the model.

    With prefix caching on, blocks full of computed tokens are named in a :class:`PrefixCache`
    (checked each time the sequence is given more slots, and when it is freed), a waiting sequence
    starts from the cached blocks of its longest known prefix (``find_cached_blocks``), and freed
    named blocks stay findable until the pool hands them out again. Only a partial last block is
    ever written, so a named (full) block is never the target of a write or a copy.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.prefix_cache = PrefixCache(block_size) if enable_prefix_caching else None
        self.block_tables: dict[str, list[int]] = {}
        self._pending_copies: list[tuple[int, int]] = []

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_used_blocks(self) -> int:
        """Blocks some sequence holds; cached blocks nobody holds count as free (they are evictable)."""
        return self.pool.num_used_blocks

    @property
    def usage(self) -> float:
        """Fraction of the pool in use."""
        return self.pool.num_used_blocks / self.pool.num_blocks

    def prefix_cache_stats(self) -> PrefixCacheStats:
        return self.prefix_cache.stats() if self.prefix_cache else PrefixCacheStats()

    def blocks_for_tokens(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def find_cached_blocks(self, sequence: Sequence) -> list[int]:
        """The cached blocks a waiting sequence can start from (whole blocks, never its last token)."""
        return self.prefix_cache.find(sequence) if self.prefix_cache else []

    def allocate_slots(self, sequence: Sequence, num_new_tokens: int, cached_block_ids: list[int] | None = None) -> bool:
        """Make room for ``num_new_tokens`` after the sequence's computed tokens; False if the pool is short.

        When admitting a waiting sequence, pass what ``find_cached_blocks`` returned (maybe nothing)
        as ``cached_block_ids``: the sequence takes those blocks first and ``num_new_tokens`` count
        after them; the caller then advances ``num_computed_tokens`` past them. On False nothing
        is taken.
        """
        block_table = self.block_tables.setdefault(sequence.seq_id, [])
        if self.prefix_cache:
            self.prefix_cache.cache_full_blocks(sequence, block_table)
        hits = cached_block_ids or []
        num_computed_tokens = sequence.num_computed_tokens + len(hits) * self.block_size
        num_needed = max(self.blocks_for_tokens(num_computed_tokens + num_new_tokens) - len(block_table) - len(hits), 0)
        write_block_index = num_computed_tokens // self.block_size
        needs_copy = write_block_index < len(block_table) and self.pool.ref_counts[block_table[write_block_index]] > 1
        # A hit on a block nobody holds takes it out of the free queue, like an allocation would.
        num_free_hits = sum(1 for block_id in hits if self.pool.ref_counts[block_id] == 0)
        if not self.pool.can_allocate(num_needed + needs_copy + num_free_hits):
            return False
        if cached_block_ids is not None and self.prefix_cache:
            self.prefix_cache.record_lookup(sequence, len(hits))
        self.pool.acquire(hits)
        block_table.extend(hits)
        if needs_copy:
            shared_block = block_table[write_block_index]
            (private_block,) = self._allocate(1)
            self.pool.release([shared_block])
            block_table[write_block_index] = private_block
            self._pending_copies.append((shared_block, private_block))
        if num_needed > 0:
            block_table.extend(self._allocate(num_needed))
        return True

    def _allocate(self, num_blocks: int) -> list[int]:
        block_ids = self.pool.allocate(num_blocks)
        if self.prefix_cache:
            self.prefix_cache.evict(block_ids)
        return block_ids

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let ``child`` share every block ``parent`` holds (e.g. a prompt sampled n times)."""
        block_table = self.block_tables.get(parent.seq_id, [])
        self.pool.share(block_table)
        self.block_tables[child.seq_id] = list(block_table)
        if self.prefix_cache:
            self.prefix_cache.fork(parent, child)

    def free(self, sequence: Sequence) -> None:
        """Release the sequence's blocks (on finish, abort or preemption), naming its full ones first.

        The tail is released first, so it is evicted before the head that other prompts may share.
        """
        block_table = self.block_tables.pop(sequence.seq_id, [])
        if self.prefix_cache:
            self.prefix_cache.cache_full_blocks(sequence, block_table)
            self.prefix_cache.forget(sequence)
        self.pool.release(block_table[::-1])

    def truncate(self, sequence: Sequence, num_blocks: int) -> None:
        """Release the sequence's blocks past its first ``num_blocks`` (rolled-back speculative tokens)."""
        block_table = self.block_tables.get(sequence.seq_id)
        if block_table is not None and len(block_table) > num_blocks:
            self.pool.release(block_table[num_blocks:][::-1])
            del block_table[num_blocks:]

    def take_pending_copies(self) -> list[tuple[int, int]]:
        """The (source, destination) block copies the runner must do before this step's forward."""
        copies, self._pending_copies = self._pending_copies, []
        return copies

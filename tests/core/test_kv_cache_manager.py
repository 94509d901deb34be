import pytest

from pagedllm_core.engine.block_pool import BlockPool
from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.sequence import Sequence
from pagedllm_core.sampling_params import SamplingParams


def make_sequence(seq_id: str, num_tokens: int) -> Sequence:
    return Sequence(seq_id, list(range(num_tokens)), SamplingParams(), 8, frozenset())


def test_pool_reference_counts_return_blocks_when_last_holder_releases():
    pool = BlockPool(4)
    blocks = pool.allocate(3)
    assert pool.num_free_blocks == 1
    pool.share(blocks[:2])
    pool.release(blocks)
    assert pool.num_free_blocks == 2  # the third block had one holder
    pool.release(blocks[:2])
    assert pool.num_free_blocks == 4
    with pytest.raises(RuntimeError):
        pool.allocate(5)


def test_allocate_slots_grows_block_table_on_demand():
    manager = KVCacheManager(num_blocks=8, block_size=4)
    sequence = make_sequence("a", 6)
    assert manager.allocate_slots(sequence, 6)
    assert len(manager.block_tables["a"]) == 2
    sequence.num_computed_tokens = 6
    assert manager.allocate_slots(sequence, 2)  # fills block 2 exactly
    assert len(manager.block_tables["a"]) == 2
    sequence.num_computed_tokens = 8
    assert manager.allocate_slots(sequence, 1)
    assert len(manager.block_tables["a"]) == 3
    manager.free(sequence)
    assert manager.num_used_blocks == 0


def test_allocate_slots_refuses_without_taking_anything_when_short():
    manager = KVCacheManager(num_blocks=2, block_size=4)
    sequence = make_sequence("a", 12)
    assert not manager.allocate_slots(sequence, 12)
    assert manager.num_used_blocks == 0


def test_fork_shares_blocks_and_write_into_shared_partial_block_copies_it():
    manager = KVCacheManager(num_blocks=8, block_size=4)
    parent = make_sequence("parent", 6)
    assert manager.allocate_slots(parent, 6)
    parent.num_computed_tokens = 6
    child = make_sequence("child", 6)
    child.num_computed_tokens = 6
    manager.fork(parent, child)
    assert manager.block_tables["child"] == manager.block_tables["parent"]
    assert manager.num_used_blocks == 2

    # The child's next token lands in the shared, half-full second block: it must get its own copy.
    shared_tail = manager.block_tables["parent"][1]
    assert manager.allocate_slots(child, 1)
    child_tail = manager.block_tables["child"][1]
    assert child_tail != shared_tail
    assert manager.block_tables["child"][0] == manager.block_tables["parent"][0]
    assert manager.take_pending_copies() == [(shared_tail, child_tail)]
    assert manager.take_pending_copies() == []

    # The parent is now the only holder of its tail, so it writes in place.
    assert manager.allocate_slots(parent, 1)
    assert manager.block_tables["parent"][1] == shared_tail
    assert manager.take_pending_copies() == []

    manager.free(parent)
    manager.free(child)
    assert manager.num_used_blocks == 0

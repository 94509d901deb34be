from pagedllm_core.engine.block_pool import BlockPool
from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.prefix_cache import hash_block_tokens, hash_extra_keys
from pagedllm_core.engine.sequence import Sequence
from pagedllm_core.sampling_params import SamplingParams

BLOCK_SIZE = 4


def make_sequence(seq_id: str, token_ids: list[int], **params) -> Sequence:
    return Sequence(seq_id, list(token_ids), SamplingParams(**params), 8, frozenset())


def admit(manager: KVCacheManager, sequence: Sequence) -> int:
    """What a scheduler does for a waiting sequence: look up, allocate the rest, compute it all, and
    start the next step (whose ``allocate_slots`` names the blocks that are full now)."""
    cached_block_ids = manager.find_cached_blocks(sequence)
    num_cached_tokens = len(cached_block_ids) * BLOCK_SIZE
    assert manager.allocate_slots(sequence, sequence.num_tokens - num_cached_tokens, cached_block_ids)
    sequence.num_computed_tokens = sequence.num_tokens
    assert manager.allocate_slots(sequence, 0)
    return num_cached_tokens


def test_block_hashes_chain_over_every_earlier_token_and_the_salt():
    root = hash_extra_keys({"cache_salt": None})
    first = hash_block_tokens(root, [1, 2, 3, 4])
    assert len(first) == 32
    assert first == hash_block_tokens(root, [1, 2, 3, 4])
    assert hash_block_tokens(first, [5, 6, 7, 8]) != hash_block_tokens(hash_block_tokens(root, [9, 2, 3, 4]), [5, 6, 7, 8])
    assert hash_extra_keys({"cache_salt": "tenant-a"}) != root
    assert hash_extra_keys({"cache_salt": "tenant-a"}) != hash_extra_keys({"cache_salt": "tenant-b"})


def test_a_shared_prefix_is_found_in_whole_blocks_and_never_covers_the_last_token():
    manager = KVCacheManager(num_blocks=16, block_size=BLOCK_SIZE)
    first = make_sequence("first", range(10))
    assert admit(manager, first) == 0
    first_blocks = list(manager.block_tables["first"])
    manager.free(first)

    # Same first 9 tokens: blocks 0 and 1 are full and shared; the partial third block is not cached.
    second = make_sequence("second", [*range(9), 42])
    assert admit(manager, second) == 8
    assert manager.block_tables["second"][:2] == first_blocks[:2]

    # A prompt of exactly two cached blocks reuses only the first: its last token must be computed.
    third = make_sequence("third", range(8))
    assert admit(manager, third) == 4

    different_start = make_sequence("different", [99, *range(1, 10)])
    assert admit(manager, different_start) == 0


def test_a_block_is_only_found_after_the_same_blocks_before_it():
    manager = KVCacheManager(num_blocks=16, block_size=BLOCK_SIZE)
    admit(manager, make_sequence("a", [1, 1, 1, 1, 2, 2, 2, 2, 0]))
    admit(manager, make_sequence("b", [3, 3, 3, 3, 4, 4, 4, 4, 0]))
    # Block 0 of "a" then block 1 of "b": the second block's tokens are cached, but after other tokens.
    assert admit(manager, make_sequence("mixed", [1, 1, 1, 1, 4, 4, 4, 4, 0])) == 4


def test_requests_with_another_salt_or_prompt_logprobs_do_not_read_the_cache():
    manager = KVCacheManager(num_blocks=16, block_size=BLOCK_SIZE)
    admit(manager, make_sequence("salted", range(9), cache_salt="tenant-a"))
    assert admit(manager, make_sequence("unsalted", range(9))) == 0
    assert admit(manager, make_sequence("other-salt", range(9), cache_salt="tenant-b")) == 0
    assert admit(manager, make_sequence("same-salt", range(9), cache_salt="tenant-a")) == 8

    logprobs = make_sequence("logprobs", range(9), prompt_logprobs=1)
    assert admit(manager, logprobs) == 0
    stats = manager.prefix_cache_stats()
    assert (stats.num_queried_tokens, stats.num_hit_tokens) == (4 * 9, 8)  # the logprobs sequence is no query


def test_hits_hold_a_reference_and_freed_cached_blocks_count_as_free_yet_stay_findable():
    manager = KVCacheManager(num_blocks=8, block_size=BLOCK_SIZE)
    first = make_sequence("first", range(9))
    admit(manager, first)
    second = make_sequence("second", range(9))
    admit(manager, second)
    shared = manager.block_tables["first"][:2]
    assert [manager.pool.ref_counts[block] for block in shared] == [2, 2]
    manager.free(first)
    assert [manager.pool.ref_counts[block] for block in shared] == [1, 1]
    manager.free(second)
    assert manager.num_used_blocks == 0
    assert manager.prefix_cache_stats().num_cached_blocks == 2

    # A hit on a free cached block takes it out of the free queue (ref count 0 -> 1).
    third = make_sequence("third", range(9))
    assert admit(manager, third) == 8
    assert [manager.pool.ref_counts[block] for block in manager.block_tables["third"]] == [1, 1, 1]
    assert manager.pool.num_free_blocks == 5
    manager.free(third)
    assert all(count == 0 for count in manager.pool.ref_counts)


def test_eviction_takes_the_least_recently_freed_block_first_and_a_sequence_tail_before_its_head():
    manager = KVCacheManager(num_blocks=6, block_size=BLOCK_SIZE)
    old = make_sequence("old", range(13))  # three full blocks, one partial
    admit(manager, old)
    old_blocks = list(manager.block_tables["old"])
    manager.free(old)
    new = make_sequence("new", range(100, 109))  # two full blocks, one partial
    admit(manager, new)
    new_blocks = list(manager.block_tables["new"])
    manager.free(new)
    assert manager.prefix_cache_stats().num_cached_blocks == 5

    # One fresh block: it is "old"'s last full block, freed before "new" and before its own head.
    assert manager.allocate_slots(make_sequence("filler", range(200, 203)), 3)
    assert manager.block_tables["filler"] == [old_blocks[2]]
    assert manager.prefix_cache_stats().num_cached_blocks == 4
    assert manager.find_cached_blocks(make_sequence("old-again", range(13))) == old_blocks[:2]
    assert manager.find_cached_blocks(make_sequence("new-again", range(100, 109))) == new_blocks[:2]


def test_allocation_counts_free_cached_hits_against_the_pool():
    manager = KVCacheManager(num_blocks=3, block_size=BLOCK_SIZE)
    first = make_sequence("first", range(9))
    admit(manager, first)
    manager.free(first)
    holder = make_sequence("holder", range(50, 52))
    assert manager.allocate_slots(holder, 2)  # takes the never-cached block; two cached free blocks remain
    second = make_sequence("second", range(10))
    hits = manager.find_cached_blocks(second)
    assert len(hits) == 2
    # Both hits leave the free queue, so no block is left for the two uncached tokens.
    assert not manager.allocate_slots(second, 2, hits)
    assert manager.pool.num_free_blocks == 2
    assert manager.block_tables["second"] == []


def test_forked_children_share_hashes_and_nothing_leaks():
    manager = KVCacheManager(num_blocks=8, block_size=BLOCK_SIZE)
    parent = make_sequence("parent", range(6))
    admit(manager, parent)
    child = parent.fork(1)
    manager.fork(parent, child)
    for sequence, token in ((parent, 7), (child, 8)):
        sequence.token_ids.append(token)
        assert manager.allocate_slots(sequence, 1)
        sequence.num_computed_tokens += 1
        sequence.token_ids.append(token)
        assert manager.allocate_slots(sequence, 1)  # block 1 of each is full now and gets named
        sequence.num_computed_tokens += 1
    manager.free(parent)
    manager.free(child)
    assert manager.num_used_blocks == 0
    assert all(count == 0 for count in manager.pool.ref_counts)
    assert admit(manager, make_sequence("again", [0, 1, 2, 3, 4, 5, 8, 8, 9])) == 8


def test_prefix_caching_off_finds_nothing_and_counts_nothing():
    manager = KVCacheManager(num_blocks=8, block_size=BLOCK_SIZE, enable_prefix_caching=False)
    first = make_sequence("first", range(9))
    admit(manager, first)
    manager.free(first)
    assert admit(manager, make_sequence("second", range(9))) == 0
    assert manager.prefix_cache_stats().num_queried_tokens == 0


def test_pool_acquire_takes_a_free_block_out_of_the_middle_of_the_free_queue():
    pool = BlockPool(4)
    blocks = pool.allocate(4)
    pool.release(blocks)
    pool.acquire([blocks[1]])
    assert pool.ref_counts[blocks[1]] == 1
    assert pool.allocate(3) == [blocks[0], blocks[2], blocks[3]]

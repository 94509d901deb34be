"""How weights and attention heads are split over tensor-parallel ranks."""

import itertools

import pytest

from pagedllm_core.distributed.partition import (
    HeadShards,
    Shard,
    attention_head_shards,
    balanced_shard,
    max_kv_heads_per_rank,
)
from pagedllm_core.errors import ConfigError


@pytest.mark.parametrize("total, world_size", [(1536, 2), (49152, 2), (10, 3), (7, 4), (3, 3)])
def test_balanced_shards_cover_every_item_once_and_differ_by_at_most_one(total, world_size):
    shards = [balanced_shard(total, rank, world_size) for rank in range(world_size)]
    assert shards[0].start == 0 and shards[-1].end == total
    assert all(left.end == right.start for left, right in itertools.pairwise(shards))
    assert max(shard.size for shard in shards) - min(shard.size for shard in shards) <= 1


def test_the_default_models_three_kv_heads_over_two_ranks_keep_whole_query_groups():
    # SmolLM2-135M: 9 query heads in 3 groups of 3.
    assert attention_head_shards(9, 3, 0, 2) == HeadShards(Shard(0, 6), Shard(0, 2))
    assert attention_head_shards(9, 3, 1, 2) == HeadShards(Shard(6, 3), Shard(2, 1))
    assert max_kv_heads_per_rank(9, 3, 2) == 2


def test_fewer_kv_heads_than_ranks_replicate_each_kv_head_and_split_its_queries():
    shards = [attention_head_shards(8, 2, rank, 4) for rank in range(4)]
    assert [shard.key_value for shard in shards] == [Shard(0, 1), Shard(0, 1), Shard(1, 1), Shard(1, 1)]
    assert [shard.query for shard in shards] == [Shard(0, 2), Shard(2, 2), Shard(4, 2), Shard(6, 2)]


def test_every_query_head_reads_the_kv_head_of_its_group_on_its_rank():
    for num_heads, num_kv_heads, world_size in [(9, 3, 2), (4, 4, 2), (8, 2, 4), (8, 1, 2), (12, 4, 3), (32, 8, 8)]:
        group = num_heads // num_kv_heads
        seen = []
        for rank in range(world_size):
            shards = attention_head_shards(num_heads, num_kv_heads, rank, world_size)
            local_group = shards.query.size // shards.key_value.size
            for local in range(shards.query.size):
                head = shards.query.start + local
                assert head // group == shards.key_value.start + local // local_group
                seen.append(head)
        assert sorted(seen) == list(range(num_heads))


@pytest.mark.parametrize("num_heads, num_kv_heads, world_size", [(6, 2, 3), (4, 2, 8)])
def test_a_split_that_cannot_keep_groups_whole_is_a_config_error(num_heads, num_kv_heads, world_size):
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        attention_head_shards(num_heads, num_kv_heads, 0, world_size)

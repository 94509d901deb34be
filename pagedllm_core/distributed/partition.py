"""Which part of each weight a tensor-parallel rank holds: pure arithmetic, no communication."""

from __future__ import annotations

from dataclasses import dataclass

from pagedllm_core.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    """A contiguous range ``[start, start + size)`` of rows, columns or heads."""

    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size

    def scaled(self, factor: int) -> Shard:
        """The same range in units ``factor`` times smaller (heads -> features of ``factor`` per head)."""
        return Shard(self.start * factor, self.size * factor)


def balanced_shard(total: int, rank: int, world_size: int) -> Shard:
    """Rank ``rank``'s contiguous share of ``total`` items; shares differ by at most one item."""
    base, extra = divmod(total, world_size)
    return Shard(rank * base + min(rank, extra), base + (rank < extra))


@dataclass(frozen=True)
class HeadShards:
    """The query heads and the key/value heads one rank computes, in head units."""

    query: Shard
    key_value: Shard


def attention_head_shards(num_heads: int, num_kv_heads: int, rank: int, world_size: int) -> HeadShards:
    """Split attention by key/value head so that each rank keeps whole GQA groups.

    With at least as many KV heads as ranks, each rank takes a balanced share of the KV heads and
    every query head that reads them (the default model's 3 KV heads over 2 ranks: 2 and 1, with 6
    and 3 query heads). With fewer KV heads than ranks, each KV head is replicated on
    ``world_size // num_kv_heads`` ranks, which divide its query heads between them.
    """
    group_size = num_heads // num_kv_heads
    if num_kv_heads >= world_size:
        kv = balanced_shard(num_kv_heads, rank, world_size)
        return HeadShards(kv.scaled(group_size), kv)
    replicas = world_size // num_kv_heads
    if world_size % num_kv_heads or group_size % replicas:
        raise ConfigError(
            f"tensor_parallel_size={world_size} cannot split {num_kv_heads} key/value heads with "
            f"{group_size} query heads each: with fewer key/value heads than ranks, tensor_parallel_size must be a "
            "multiple of the key/value heads and divide the query heads of each"
        )
    kv_head = rank // replicas
    per_rank = group_size // replicas
    return HeadShards(Shard(kv_head * group_size + (rank % replicas) * per_rank, per_rank), Shard(kv_head, 1))


def max_kv_heads_per_rank(num_heads: int, num_kv_heads: int, world_size: int) -> int:
    """The most KV heads any rank holds: every rank sizes its KV pool for it, so all pools have as many blocks."""
    return max(attention_head_shards(num_heads, num_kv_heads, rank, world_size).key_value.size for rank in range(world_size))

"""How a decode step's context is cut into partitions (the PagedAttention V2 split)."""

from __future__ import annotations

from dataclasses import dataclass

# The longest partition: a block keeps a float score per position and query row in shared memory.
MAX_PARTITION_SIZE = 512
# Partitions are never cut shorter than this; below it the reduce costs more than the parallelism gains.
MIN_PARTITION_SIZE = 64
# The kernel attends up to this many query heads of one KV head per block (kMaxGroupRows in paged_decode.cu).
MAX_GROUP_ROWS = 8


@dataclass(frozen=True)
class DecodePartitions:
    """The partition length and the number of partitions of the step's longest sequence."""

    partition_size: int
    num_partitions: int


def plan_decode_partitions(
    num_seqs: int, num_heads: int, num_kv_heads: int, max_seq_len: int, num_target_blocks: int
) -> DecodePartitions:
    """Partitions of at most ``MAX_PARTITION_SIZE`` positions, cut shorter (down to
    ``MIN_PARTITION_SIZE``) while the step has fewer than ``num_target_blocks`` thread blocks."""
    group_size = num_heads // num_kv_heads
    blocks_per_partition = num_seqs * num_kv_heads * -(-group_size // MAX_GROUP_ROWS)
    partition_size = MAX_PARTITION_SIZE
    while (
        partition_size > MIN_PARTITION_SIZE
        and blocks_per_partition * -(-max_seq_len // partition_size) < num_target_blocks
        and max_seq_len > partition_size // 2
    ):
        partition_size //= 2
    return DecodePartitions(partition_size, max(1, -(-max_seq_len // partition_size)))

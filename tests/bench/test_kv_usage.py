"""KV slots per sequence, paged and padded, counted by hand."""

from pagedllm_core.bench.kv_usage import paged_slots_per_sequence, static_batch_slots_per_sequence


def test_paged_sequences_round_up_to_their_own_last_block():
    # 5 -> 8 slots, 8 -> 8, 9 -> 12 in blocks of 4
    assert paged_slots_per_sequence([5, 8, 9], block_size=4) == (8 + 8 + 12) / 3


def test_static_batches_pad_every_sequence_to_the_longest_prompt_of_its_batch():
    # batches [10, 30] and [20]: 2 * (30 + 5) + 1 * (20 + 5)
    assert static_batch_slots_per_sequence([10, 30, 20], output_len=5, batch_size=2) == (70 + 25) / 3

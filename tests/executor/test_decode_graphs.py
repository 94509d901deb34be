"""The CPU side of decode CUDA graphs: buckets and the persistent buffers a step is copied into
(capture and replay need a GPU; scripts/gpu_check.sh runs the engine there with graphs on)."""

import torch

from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.config import EngineConfig
from pagedllm_core.worker.cuda_graphs import DecodeGraphs, capture_sizes


def decode_graphs(max_num_seqs=8, max_blocks_per_seq=6):
    return DecodeGraphs(None, None, [], max_num_seqs, max_blocks_per_seq, 96, torch.device("cpu"))


def decode_metadata(seq_lens, block_tables):
    num_seqs = len(seq_lens)
    return AttentionMetadata(
        slot_mapping=torch.tensor([100 + i for i in range(num_seqs)]),
        query_start_loc=torch.arange(num_seqs + 1, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor(block_tables, dtype=torch.int32),
        max_query_len=1,
        max_seq_len=max(seq_lens),
    )


def test_capture_sizes_cover_every_batch_up_to_max_num_seqs():
    assert capture_sizes(1) == [1]
    assert capture_sizes(6) == [1, 2, 4, 6]
    assert capture_sizes(20) == [1, 2, 4, 8, 16, 20]
    sizes = capture_sizes(1024)
    assert sizes[:5] == [1, 2, 4, 8, 16] and sizes[-1] == 256 and len(sizes) == 35


def test_decode_steps_take_the_smallest_bucket_that_holds_them():
    graphs = decode_graphs(max_num_seqs=20)
    assert graphs.bucket(decode_metadata([5, 9, 3], [[1], [2], [3]])) == 4
    assert graphs.bucket(decode_metadata([5] * 17, [[1]] * 17)) == 20
    prefill = decode_metadata([5, 9], [[1], [2]])
    prefill.max_query_len = 4
    assert graphs.bucket(prefill) is None


def test_fill_copies_the_step_and_pads_the_rest_of_its_bucket():
    graphs = decode_graphs()
    # A previous, larger step leaves its rows behind.
    graphs.fill(torch.arange(8), torch.arange(8), decode_metadata([7] * 8, [[9, 9]] * 8), size=8)

    metadata = decode_metadata([5, 40, 17], [[4, 0, 0], [1, 2, 3], [7, 8, 0]])
    graphs.fill(torch.tensor([11, 12, 13]), torch.tensor([4, 39, 16]), metadata, size=4)

    assert graphs.input_ids[:3].tolist() == [11, 12, 13]
    assert graphs.positions[:3].tolist() == [4, 39, 16]
    # The padding row writes nothing (slot -1) and attends one position; rows past the bucket are not touched.
    assert graphs.metadata.slot_mapping[:5].tolist() == [100, 101, 102, -1, 104]
    assert graphs.metadata.seq_lens[:5].tolist() == [5, 40, 17, 1, 7]
    assert graphs.metadata.block_tables[:3, :3].tolist() == [[4, 0, 0], [1, 2, 3], [7, 8, 0]]


def test_enforce_eager_is_an_engine_setting_off_by_default():
    assert EngineConfig().enforce_eager is False
    assert EngineConfig(enforce_eager=True).enforce_eager is True

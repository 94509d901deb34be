"""CUDA graphs of decode steps, one per batch-size bucket (``enforce_eager=False`` on CUDA).

A decode step of a small batch is dominated by the launch cost of the many small kernels of a
forward pass. Replaying a CUDA graph launches them all at once. The graphs are captured at
start-up for batch sizes 1, 2, 4 and multiples of 8 up to ``max_num_seqs`` (at most 256); each
reads its inputs from persistent device buffers, which a step's inputs are copied into. A step of
``n`` sequences replays the smallest bucket of at least ``n`` sequences; the rows past ``n`` are
padding whose token goes to slot -1 (which the backend's cache write skips) with a context of one
position. Prefill and mixed steps, and decode steps larger than every bucket, run eagerly.

The attention backend must allow it (``AttentionBackend.supports_cuda_graphs``): its ``prepare``
is called once per bucket at capture, with ``max_seq_len`` at ``max_model_len``, and never again.
"""

from __future__ import annotations

import logging

import torch

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.metadata import AttentionMetadata

logger = logging.getLogger(__name__)

MAX_CAPTURE_SIZE = 256


def capture_sizes(max_num_seqs: int) -> list[int]:
    """The batch sizes captured: 1, 2, 4, 8, 16, ..., up to ``max_num_seqs`` (included) or 256."""
    largest = min(max_num_seqs, MAX_CAPTURE_SIZE)
    sizes = [size for size in (1, 2, 4, *range(8, MAX_CAPTURE_SIZE + 1, 8)) if size < largest]
    return [*sizes, largest]


class DecodeGraphs:
    """The captured graphs of one model and their persistent input buffers."""

    def __init__(
        self,
        model: torch.nn.Module,
        attention: AttentionBackend,
        kv_caches: list[torch.Tensor],
        max_num_seqs: int,
        max_blocks_per_seq: int,
        max_model_len: int,
        device: torch.device,
    ):
        self.model = model
        self.attention = attention
        self.kv_caches = kv_caches
        self.sizes = capture_sizes(max_num_seqs)
        self.max_model_len = max_model_len
        size = self.sizes[-1]
        self.input_ids = torch.zeros(size, dtype=torch.int64, device=device)
        self.positions = torch.zeros(size, dtype=torch.int64, device=device)
        self.metadata = AttentionMetadata(
            slot_mapping=torch.full((size,), -1, dtype=torch.int64, device=device),
            query_start_loc=torch.arange(size + 1, dtype=torch.int32, device=device),
            seq_lens=torch.ones(size, dtype=torch.int32, device=device),
            block_tables=torch.zeros(size, max_blocks_per_seq, dtype=torch.int32, device=device),
            max_query_len=1,
            max_seq_len=max_model_len,
        )
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._outputs: dict[int, torch.Tensor] = {}

    def bucket(self, metadata: AttentionMetadata) -> int | None:
        """The captured batch size that runs this step, or None when it runs eagerly."""
        if metadata.max_query_len != 1:
            return None
        return next((size for size in self.sizes if size >= metadata.num_seqs), None)

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every bucket, the largest first so that the smaller ones reuse its memory."""
        pool = None
        for size in reversed(self.sizes):
            metadata = self._metadata_of(size)
            self.attention.prepare(metadata)
            # An eager pass first: lazy initialisation (kernel builds, workspaces) cannot be captured.
            self._forward(size, metadata)
            torch.cuda.synchronize(self.input_ids.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._outputs[size] = self._forward(size, metadata)
            pool = graph.pool()
            self._graphs[size] = graph
        logger.info("captured CUDA graphs of decode steps for batch sizes %s", self.sizes)

    def fill(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata, size: int) -> None:
        """Copy a step's inputs into the first rows of the buffers and make rows up to ``size`` padding."""
        num_seqs = metadata.num_seqs
        static = self.metadata
        self.input_ids[:num_seqs].copy_(input_ids)
        self.positions[:num_seqs].copy_(positions)
        static.slot_mapping[:num_seqs].copy_(metadata.slot_mapping)
        static.slot_mapping[num_seqs:size].fill_(-1)
        static.seq_lens[:num_seqs].copy_(metadata.seq_lens)
        static.seq_lens[num_seqs:size].fill_(1)
        static.block_tables[:num_seqs, : metadata.block_tables.shape[1]].copy_(metadata.block_tables)

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata) -> torch.Tensor:
        """The step's hidden states ``[num_seqs, hidden_size]`` from its bucket's graph (see :meth:`bucket`)."""
        size = self.bucket(metadata)
        self.fill(input_ids, positions, metadata, size)
        self._graphs[size].replay()
        return self._outputs[size][: metadata.num_seqs]

    def _metadata_of(self, size: int) -> AttentionMetadata:
        static = self.metadata
        return AttentionMetadata(
            slot_mapping=static.slot_mapping[:size],
            query_start_loc=static.query_start_loc[: size + 1],
            seq_lens=static.seq_lens[:size],
            block_tables=static.block_tables[:size],
            max_query_len=1,
            max_seq_len=self.max_model_len,
        )

    def _forward(self, size: int, metadata: AttentionMetadata) -> torch.Tensor:
        return self.model(self.input_ids[:size], self.positions[:size], self.kv_caches, metadata)

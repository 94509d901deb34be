"""The one place that turns a scheduled step into tensors, runs the model and samples."""

from __future__ import annotations

import torch

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.engine.scheduler import SchedulerOutput
from pagedllm_core.sampling.sampler import Sampler, SamplingMetadata


class ModelRunner:
    """Runs the model on the flattened tokens of a step over the paged KV cache."""

    def __init__(
        self,
        model: torch.nn.Module,
        attention: AttentionBackend,
        sampler: Sampler,
        kv_cache: torch.Tensor,
        block_size: int,
        vocab_size: int,
        device: torch.device,
    ):
        self.model = model
        self.attention = attention
        self.sampler = sampler
        self.kv_cache = kv_cache
        self.kv_caches = list(kv_cache.unbind(0))
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.device = device
        self._generators: dict[str, torch.Generator] = {}

    @torch.inference_mode()
    def execute(self, output: SchedulerOutput) -> list[int]:
        """Run one step; returns the sampled token of each scheduled request that samples, in order."""
        for source, destination in output.block_copies:
            self.kv_cache[:, :, destination] = self.kv_cache[:, :, source]
        if not output.scheduled:
            return []
        input_ids, positions, metadata, sample_rows = self._prepare_inputs(output)
        self.attention.prepare(metadata)
        hidden_states = self.model(input_ids, positions, self.kv_caches, metadata)
        if not sample_rows:
            return []
        logits = self.model.compute_logits(hidden_states[sample_rows])
        sampling_metadata = self._sampling_metadata(output)
        return self.sampler.sample(logits, sampling_metadata).tolist()

    def _prepare_inputs(self, output: SchedulerOutput):
        requests = [item.request for item in output.scheduled]
        num_new_tokens = [item.num_new_tokens for item in output.scheduled]
        num_computed = [request.num_computed_tokens for request in requests]
        token_ids: list[int] = []
        for request, start, count in zip(requests, num_computed, num_new_tokens):
            token_ids.extend(request.token_ids[start : start + count])

        block_tables = self._block_table_tensor(output)
        query_lens = torch.tensor(num_new_tokens, dtype=torch.int64)
        computed = torch.tensor(num_computed, dtype=torch.int64)
        query_start_loc = torch.zeros(len(requests) + 1, dtype=torch.int64)
        torch.cumsum(query_lens, dim=0, out=query_start_loc[1:])
        # Each token's sequence and position, derived with tensor ops rather than per-sequence loops.
        token_seq = torch.repeat_interleave(torch.arange(len(requests)), query_lens)
        positions = computed[token_seq] + torch.arange(len(token_ids)) - query_start_loc[token_seq]
        slot_mapping = (
            block_tables[token_seq, positions // self.block_size].long() * self.block_size + positions % self.block_size
        )
        seq_lens = computed + query_lens
        metadata = AttentionMetadata(
            slot_mapping=slot_mapping.to(self.device),
            query_start_loc=query_start_loc.to(torch.int32).to(self.device),
            seq_lens=seq_lens.to(torch.int32).to(self.device),
            block_tables=block_tables.to(self.device),
            max_query_len=max(num_new_tokens),
            max_seq_len=int(seq_lens.max()),
        )
        sample_rows = [
            int(query_start_loc[i + 1]) - 1 for i, item in enumerate(output.scheduled) if item.samples_next_token
        ]
        input_ids = torch.tensor(token_ids, dtype=torch.int64, device=self.device)
        return input_ids, positions.to(self.device), metadata, sample_rows

    @staticmethod
    def _block_table_tensor(output: SchedulerOutput) -> torch.Tensor:
        width = max(len(item.block_ids) for item in output.scheduled)
        rows = [item.block_ids + [0] * (width - len(item.block_ids)) for item in output.scheduled]
        return torch.tensor(rows, dtype=torch.int32)

    def _sampling_metadata(self, output: SchedulerOutput) -> SamplingMetadata:
        sampling = [item.request for item in output.scheduled if item.samples_next_token]
        generators = {}
        for row, request in enumerate(sampling):
            seed = request.sampling_params.seed
            if seed is not None:
                generators[row] = self._generator_for(request.request_id, seed)
        return SamplingMetadata.from_params(
            [request.sampling_params for request in sampling], generators, self.vocab_size, self.device
        )

    def _generator_for(self, request_id: str, seed: int) -> torch.Generator:
        generator = self._generators.get(request_id)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed)
            self._generators[request_id] = generator
        return generator

    def release_request(self, request_id: str) -> None:
        """Forget per-request state (its generator) once the request is finished."""
        self._generators.pop(request_id, None)

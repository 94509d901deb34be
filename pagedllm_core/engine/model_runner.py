"""The one place that turns a scheduled step into tensors, runs the model and samples."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.engine.request import Request
from pagedllm_core.engine.sampling_inputs import SamplingRow, build_sampling_metadata
from pagedllm_core.engine.scheduler import SchedulerOutput
from pagedllm_core.sampling.sampler import Sampler, SamplerOutput, score_tokens


@dataclass
class TokenLogprobs:
    """The log-probability of one token and, when asked for, the most likely alternatives."""

    token_id: int
    logprob: float
    rank: int | None  # None when no logprobs were asked for
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class StepResult:
    """What a step produced, per scheduled request that sampled (in schedule order)."""

    # One list per sampling request: its ``num_samples`` tokens, first for itself, then its forks.
    samples: list[list[TokenLogprobs]] = field(default_factory=list)
    # Request id -> (prompt position, logprobs of the prompt token there) computed this step.
    prompt_logprobs: dict[str, list[tuple[int, TokenLogprobs]]] = field(default_factory=dict)

    @property
    def sampled_token_ids(self) -> list[list[int]]:
        return [[sample.token_id for sample in samples] for samples in self.samples]


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
    def execute(self, output: SchedulerOutput) -> StepResult:
        """Run one step: copy-on-write copies, the forward pass, prompt logprobs, sampling."""
        result = StepResult()
        if not output.scheduled:
            self._copy_blocks(output)
            return result
        hidden_states, query_start = self._forward(output)
        self._add_prompt_logprobs(output, hidden_states, query_start, result)

        sample_rows: list[int] = []
        rows: list[SamplingRow] = []
        for i, item in enumerate(output.scheduled):
            request = item.request
            for index in range(item.num_samples):
                sample_rows.append(query_start[i + 1] - 1)
                sequence_id = request.request_id if index == 0 else request.child_id(index)
                rows.append(SamplingRow(request, self._generator_for(sequence_id, request.sampling_params.seed, index)))
        if not rows:
            return result
        logits = self.model.compute_logits(hidden_states[sample_rows])
        sampled = self.sampler.sample(logits, build_sampling_metadata(rows, self.vocab_size, self.device))
        row_logprobs = _to_token_logprobs(sampled)
        cursor = 0
        for item in output.scheduled:
            if item.num_samples:
                result.samples.append(row_logprobs[cursor : cursor + item.num_samples])
                cursor += item.num_samples
        return result

    @torch.inference_mode()
    def next_token_logprobs(self, output: SchedulerOutput, temperature: float = 1.0) -> torch.Tensor:
        """Run one step without sampling: ``log_softmax(logits / temperature)`` of each request's last
        token, ``[num_scheduled, vocab_size]`` (beam search scores candidates from these)."""
        hidden_states, query_start = self._forward(output)
        logits = self.model.compute_logits(hidden_states[[end - 1 for end in query_start[1:]]])
        return (logits / temperature if temperature > 0 else logits).log_softmax(dim=-1)

    def _copy_blocks(self, output: SchedulerOutput) -> None:
        for source, destination in output.block_copies:
            self.kv_cache[:, :, destination] = self.kv_cache[:, :, source]

    def _forward(self, output: SchedulerOutput) -> tuple[torch.Tensor, list[int]]:
        """Copy-on-write copies, then the model over the step's tokens; hidden states and query starts."""
        self._copy_blocks(output)
        input_ids, positions, metadata, query_start = self._prepare_inputs(output)
        self.attention.prepare(metadata)
        return self.model(input_ids, positions, self.kv_caches, metadata), query_start

    def _prepare_inputs(self, output: SchedulerOutput):
        requests = [item.request for item in output.scheduled]
        num_new_tokens = [item.num_new_tokens for item in output.scheduled]
        num_computed = [request.num_computed_tokens for request in requests]
        token_ids: list[int] = []
        for request, start, count in zip(requests, num_computed, num_new_tokens):
            token_ids.extend(request.token_ids[start : start + count])

        block_tables = _block_table_tensor(output)
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
        input_ids = torch.tensor(token_ids, dtype=torch.int64, device=self.device)
        return input_ids, positions.to(self.device), metadata, query_start_loc.tolist()

    def _add_prompt_logprobs(self, output: SchedulerOutput, hidden_states, query_start: list[int], result: StepResult):
        """Score each prompt token (from the second on) that this step's prompt chunks predict."""
        for i, item in enumerate(output.scheduled):
            request = item.request
            num_logprobs = request.sampling_params.prompt_logprobs
            first = request.num_computed_tokens
            # Hidden state at position p predicts prompt token p + 1.
            last = min(first + item.num_new_tokens, request.num_prompt_tokens - 1)
            if num_logprobs is None or first >= last:
                continue
            rows = slice(query_start[i], query_start[i] + last - first)
            logprobs = self.model.compute_logits(hidden_states[rows]).log_softmax(dim=-1)
            targets = torch.tensor(request.prompt_token_ids[first + 1 : last + 1], device=logprobs.device)
            entries = _to_token_logprobs(score_tokens(logprobs, targets, num_logprobs))
            result.prompt_logprobs[request.request_id] = list(zip(range(first + 1, last + 1), entries))

    def _generator_for(self, sequence_id: str, seed: int | None, index: int) -> torch.Generator | None:
        if seed is None:
            return None
        generator = self._generators.get(sequence_id)
        if generator is None:
            generator = torch.Generator(device=self.device)
            # Sibling sequences of one seeded request each get their own, still reproducible, stream.
            generator.manual_seed(seed if index == 0 else hash((seed, index)) % 2**63)
            self._generators[sequence_id] = generator
        return generator

    def release_request(self, request: Request) -> None:
        """Forget per-sequence state (its generator) once the sequence is finished."""
        self._generators.pop(request.request_id, None)


def _block_table_tensor(output: SchedulerOutput) -> torch.Tensor:
    width = max(len(item.block_ids) for item in output.scheduled)
    rows = [item.block_ids + [0] * (width - len(item.block_ids)) for item in output.scheduled]
    return torch.tensor(rows, dtype=torch.int32)


def _to_token_logprobs(scored: SamplerOutput) -> list[TokenLogprobs]:
    """Move a batch of scored tokens to Python in one transfer per tensor."""
    token_ids, logprobs = scored.token_ids.tolist(), scored.logprobs.tolist()
    ranks = scored.ranks.tolist() if scored.ranks is not None else [None] * len(token_ids)
    entries = [TokenLogprobs(*values) for values in zip(token_ids, logprobs, ranks)]
    if scored.top_token_ids is not None:
        for entry, ids, values in zip(entries, scored.top_token_ids.tolist(), scored.top_logprobs.tolist()):
            entry.top = list(zip(ids, values))
    return entries

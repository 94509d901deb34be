"""Building a step's ``SamplingMetadata`` from the persistent input batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pagedllm_core.sampling.constraints import packed_bitmasks_from_bytes, unpack_token_bitmask
from pagedllm_core.sampling.sampler import SamplingMetadata, needs_sample_logprobs
from pagedllm_core.worker.input_batch import HeldSequence, InputBatch


@dataclass
class SamplingRow:
    """One row of logits to sample: the sequence it continues, the generator it draws with and,
    for a structured-output sequence, the packed bitmask of the tokens it may draw."""

    sequence: HeldSequence
    generator: torch.Generator | None = None
    allowed_token_bitmask: bytes | None = None


def build_sampling_metadata(batch: InputBatch, rows: list[SamplingRow], device: torch.device) -> SamplingMetadata:
    """Gather the rows' settings from the batch's tensors; per-row Python work only for the rows
    that use penalties, logit bias, ``min_tokens``, constraints or seeds."""
    sequences = [row.sequence for row in rows]
    params = [sequence.sampling_params for sequence in sequences]
    slots = torch.tensor([sequence.slot for sequence in sequences], dtype=torch.int64)
    temperature, top_k = batch.temperature[slots], batch.top_k[slots]
    top_p, min_p = batch.top_p[slots], batch.min_p[slots]
    metadata = SamplingMetadata(
        temperature=temperature.to(device),
        top_k=top_k.to(device),
        top_p=top_p.to(device),
        min_p=min_p.to(device),
        all_greedy=all(p.is_greedy for p in params),
        no_top_k=bool((top_k >= batch.vocab_size).all()),
        no_top_p=bool((top_p >= 1.0).all()),
        no_min_p=bool((min_p == 0).all()),
        generators={i: row.generator for i, row in enumerate(rows) if row.generator is not None},
    )
    penalized = [i for i, sequence in enumerate(sequences) if sequence.output_token_counts is not None]
    if penalized:
        vocab_size = batch.vocab_size
        metadata.presence_penalty = _floats([p.presence_penalty for p in params], device)
        metadata.frequency_penalty = _floats([p.frequency_penalty for p in params], device)
        metadata.repetition_penalty = _floats([p.repetition_penalty for p in params], device)
        prompt_mask = torch.zeros(len(rows), vocab_size, dtype=torch.bool)
        counts = torch.zeros(len(rows), vocab_size, dtype=torch.int64)
        for i in penalized:
            prompt_mask[i] = sequences[i].prompt_token_mask
            counts[i] = sequences[i].output_token_counts
        metadata.prompt_token_mask, metadata.output_token_counts = prompt_mask.to(device), counts.to(device)
    bias = [(i, token, value) for i, p in enumerate(params) for token, value in p.logit_bias.items() if token < batch.vocab_size]
    if bias:
        rows_index, token_ids, values = zip(*bias)
        metadata.logit_bias = (_longs(rows_index, device), _longs(token_ids, device), _floats(values, device))
    banned = [(i, token) for i, sequence in enumerate(sequences) if sequence.below_min_tokens for token in sequence.stop_token_ids]
    if banned:
        rows_index, token_ids = zip(*banned)
        metadata.banned_tokens = (_longs(rows_index, device), _longs(token_ids, device))
    constrained = [(i, row.allowed_token_bitmask) for i, row in enumerate(rows) if row.allowed_token_bitmask is not None]
    if constrained:
        rows_index, bitmasks = zip(*constrained)
        packed = packed_bitmasks_from_bytes(list(bitmasks))
        metadata.allowed_tokens = (_longs(rows_index, device), unpack_token_bitmask(packed.to(device), batch.vocab_size))
    requested = [p.logprobs for p in params if p.logprobs is not None]
    metadata.max_num_logprobs = max(requested) if requested else None
    metadata.logprob_rows = [i for i, p in enumerate(params) if needs_sample_logprobs(p)]
    return metadata


def _floats(values, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


def _longs(values, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=device)

"""Building a step's ``SamplingMetadata`` from the sequences that sample."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pagedllm_core.engine.request import Request
from pagedllm_core.sampling.constraints import unpack_token_bitmask
from pagedllm_core.sampling.sampler import SamplingMetadata


@dataclass
class SamplingRow:
    """One row of logits to sample: the sequence it continues and the generator it draws with."""

    request: Request
    generator: torch.Generator | None


def build_sampling_metadata(rows: list[SamplingRow], vocab_size: int, device: torch.device) -> SamplingMetadata:
    params = [row.request.sampling_params for row in rows]
    top_k = [p.top_k if p.top_k > 0 else vocab_size for p in params]
    metadata = SamplingMetadata(
        temperature=_floats([p.temperature for p in params], device),
        top_k=torch.tensor(top_k, dtype=torch.int64, device=device),
        top_p=_floats([p.top_p for p in params], device),
        min_p=_floats([p.min_p for p in params], device),
        all_greedy=all(p.is_greedy for p in params),
        no_top_k=all(k >= vocab_size for k in top_k),
        no_top_p=all(p.top_p >= 1.0 for p in params),
        no_min_p=all(p.min_p == 0 for p in params),
        generators={i: row.generator for i, row in enumerate(rows) if row.generator is not None},
    )
    if any(p.has_penalties for p in params):
        metadata.presence_penalty = _floats([p.presence_penalty for p in params], device)
        metadata.frequency_penalty = _floats([p.frequency_penalty for p in params], device)
        metadata.repetition_penalty = _floats([p.repetition_penalty for p in params], device)
        metadata.prompt_token_mask = _token_counts([row.request.prompt_token_ids for row in rows], vocab_size, device) > 0
        metadata.output_token_counts = _token_counts([row.request.output_token_ids for row in rows], vocab_size, device)
    bias = [(i, token, value) for i, p in enumerate(params) for token, value in p.logit_bias.items() if token < vocab_size]
    if bias:
        rows_index, token_ids, values = zip(*bias)
        metadata.logit_bias = (_longs(rows_index, device), _longs(token_ids, device), _floats(values, device))
    banned = [(i, token) for i, row in enumerate(rows) if row.request.below_min_tokens for token in row.request.stop_token_ids]
    if banned:
        rows_index, token_ids = zip(*banned)
        metadata.banned_tokens = (_longs(rows_index, device), _longs(token_ids, device))
    constrained = [(i, row.request.constraint) for i, row in enumerate(rows) if row.request.constraint is not None]
    if constrained:
        rows_index, states = zip(*constrained)
        packed = torch.stack([state.allowed_token_bitmask() for state in states]).to(device)
        metadata.allowed_tokens = (_longs(rows_index, device), unpack_token_bitmask(packed, vocab_size))
    requested = [p.logprobs for p in params if p.logprobs is not None]
    metadata.max_num_logprobs = max(requested) if requested else None
    return metadata


def _token_counts(token_lists: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """``[num_rows, vocab_size]`` occurrences of each token in each row's list."""
    width = max((len(tokens) for tokens in token_lists), default=0)
    # Pad with an extra column index that is dropped afterwards.
    padded = torch.full((len(token_lists), width), vocab_size, dtype=torch.int64)
    for i, tokens in enumerate(token_lists):
        padded[i, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.int64)
    counts = torch.zeros(len(token_lists), vocab_size + 1, dtype=torch.int64)
    counts.scatter_add_(1, padded, torch.ones_like(padded))
    return counts[:, :vocab_size].to(device)


def _floats(values, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


def _longs(values, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=device)

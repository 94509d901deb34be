"""Batched logits transformations, each one pass over ``[num_rows, vocab_size]`` tensors."""

from __future__ import annotations

import torch

from pagedllm_core.sampling.sampler import SamplingMetadata


def apply_logit_bias_and_bans(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
    """Add each row's ``logit_bias`` and forbid stop tokens for rows still under ``min_tokens``."""
    if metadata.logit_bias is not None:
        rows, token_ids, values = metadata.logit_bias
        logits.index_put_((rows, token_ids), values, accumulate=True)
    if metadata.banned_tokens is not None:
        rows, token_ids = metadata.banned_tokens
        logits[rows, token_ids] = float("-inf")
    return logits


def apply_allowed_tokens(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
    """Set the logits of tokens a constrained row may not draw (structured outputs) to -inf."""
    if metadata.allowed_tokens is not None:
        rows, allowed = metadata.allowed_tokens
        logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))
    return logits


def apply_penalties(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
    """Repetition (over prompt and output), then frequency and presence (over the output) penalties."""
    if metadata.output_token_counts is None:
        return logits
    counts = metadata.output_token_counts
    seen = metadata.prompt_token_mask | (counts > 0)
    repetition = metadata.repetition_penalty.unsqueeze(-1)
    penalized = torch.where(logits > 0, logits / repetition, logits * repetition)
    logits = torch.where(seen, penalized, logits)
    logits = logits - metadata.frequency_penalty.unsqueeze(-1) * counts
    return logits - metadata.presence_penalty.unsqueeze(-1) * (counts > 0)


def apply_min_p(probs: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Zero the probability of tokens below ``min_p`` times the row's most likely token."""
    threshold = probs.amax(dim=-1, keepdim=True) * min_p.unsqueeze(-1)
    return probs.masked_fill(probs < threshold, 0.0)


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> torch.Tensor:
    """Set logits outside each row's top-k and top-p nucleus to -inf (one sort for both filters)."""
    sorted_logits, sorted_ids = logits.sort(dim=-1, descending=False)
    vocab_size = logits.shape[-1]
    if top_k is not None:
        kth_smallest_kept = sorted_logits.gather(-1, (vocab_size - top_k).clamp(min=0).unsqueeze(-1))
        sorted_logits.masked_fill_(sorted_logits < kth_smallest_kept, float("-inf"))
    if top_p is not None:
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        outside_nucleus = cumulative <= (1 - top_p).unsqueeze(-1)
        outside_nucleus[:, -1] = False  # the most likely token always stays
        sorted_logits.masked_fill_(outside_nucleus, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, sorted_ids, sorted_logits)

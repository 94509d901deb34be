"""The sampling step: edit the logits as the requests ask, let the sampler choose, score the choice."""

from __future__ import annotations

import torch

from pagedllm_core.sampling.logits_processors import apply_allowed_tokens, apply_logit_bias_and_bans, apply_penalties
from pagedllm_core.sampling.sampler import Sampler, SamplerOutput, SamplingMetadata, score_sampled_tokens


def process_logits(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
    """Logit bias, ``min_tokens`` bans, penalties and structured-output masks, on a copy when any of
    them would write in place (the raw logits must survive for scoring)."""
    edits_in_place = any(edit is not None for edit in (metadata.logit_bias, metadata.banned_tokens, metadata.allowed_tokens))
    processed = apply_logit_bias_and_bans(logits.clone() if edits_in_place else logits, metadata)
    return apply_allowed_tokens(apply_penalties(processed, metadata), metadata)


def sample_tokens(sampler: Sampler, logits: torch.Tensor, metadata: SamplingMetadata) -> SamplerOutput:
    """Process ``logits`` ``[num_rows, vocab]``, let ``sampler`` choose a token per row, and score the
    choices (with ranks and top logprobs when asked for) under the raw distribution, for the rows that
    need their logprob (``metadata.logprob_rows``)."""
    token_ids = sampler.sample(process_logits(logits, metadata), metadata)
    return score_sampled_tokens(logits, token_ids, metadata.max_num_logprobs, metadata.logprob_rows)

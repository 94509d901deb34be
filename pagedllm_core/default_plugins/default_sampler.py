"""The ``default`` sampler: logit bias, penalties, constraint masks, temperature, top-k/top-p/min-p, seeds, logprobs."""

from __future__ import annotations

import torch

from pagedllm_core.hookspecs import hookimpl
from pagedllm_core.sampling.logits_processors import (
    apply_allowed_tokens,
    apply_logit_bias_and_bans,
    apply_min_p,
    apply_penalties,
    apply_top_k_top_p,
)
from pagedllm_core.sampling.sampler import Sampler, SamplerOutput, SamplingMetadata, score_sampled_tokens


class DefaultSampler(Sampler):
    """Exponential-race sampling: ``argmax(probs / Exp(1) noise)`` draws from ``probs``.

    Drawing the noise per row lets seeded rows use their own generator while the rest share one.
    Logprobs are those of the model's raw distribution, before any penalty or filter.
    """

    def __init__(self, config):
        super().__init__(config)
        self._generator: torch.Generator | None = None

    def _shared_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.config.seed)
        return self._generator

    def sample(self, logits: torch.Tensor, metadata: SamplingMetadata) -> SamplerOutput:
        # Bias, bans and constraint masks write into their input; the raw logits must survive for scoring.
        edits_in_place = any(
            edit is not None for edit in (metadata.logit_bias, metadata.banned_tokens, metadata.allowed_tokens)
        )
        processed = apply_penalties(apply_logit_bias_and_bans(logits.clone() if edits_in_place else logits, metadata),
                                    metadata)
        processed = apply_allowed_tokens(processed, metadata)
        token_ids = processed.argmax(dim=-1)
        if not metadata.all_greedy:
            token_ids = torch.where(metadata.temperature > 0, self._draw(processed, metadata), token_ids)
        return score_sampled_tokens(logits, token_ids, metadata.max_num_logprobs)

    def _draw(self, logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
        temperature = torch.where(metadata.temperature > 0, metadata.temperature, 1.0)
        logits = logits / temperature.unsqueeze(-1)
        if not (metadata.no_top_k and metadata.no_top_p):
            logits = apply_top_k_top_p(
                logits,
                None if metadata.no_top_k else metadata.top_k,
                None if metadata.no_top_p else metadata.top_p,
            )
        probs = logits.softmax(dim=-1)
        if not metadata.no_min_p:
            probs = apply_min_p(probs, metadata.min_p)
        noise = torch.empty_like(probs).exponential_(generator=self._shared_generator(probs.device))
        for row, generator in metadata.generators.items():
            noise[row].exponential_(generator=generator)
        return (probs / noise).argmax(dim=-1)


@hookimpl
def register_samplers(register):
    register("default", DefaultSampler, "penalties, logit bias, temperature, top-k/top-p/min-p, seeds, logprobs")

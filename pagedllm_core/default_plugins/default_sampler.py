"""The ``default`` sampler: greedy, temperature, top-k/top-p/min-p, seeds."""

from __future__ import annotations

import torch

from pagedllm_core.hookspecs import hookimpl
from pagedllm_core.sampling.logits_processors import apply_min_p, apply_top_k_top_p
from pagedllm_core.sampling.sampler import Sampler, SamplingMetadata, argmax_rows


class DefaultSampler(Sampler):
    """Exponential-race sampling: ``argmax(probs / Exp(1) noise)`` draws from ``probs``.

    Drawing the noise per row lets seeded rows use their own generator while the rest share one.
    """

    def __init__(self, config):
        super().__init__(config)
        self._generator: torch.Generator | None = None

    def _shared_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.config.seed)
        return self._generator

    def sample(self, logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
        token_ids = argmax_rows(logits)
        if not metadata.all_greedy:
            token_ids = torch.where(metadata.temperature > 0, self._draw(logits, metadata), token_ids)
        return token_ids

    def _draw(self, logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
        probs = sampling_probs(logits, metadata)
        noise = torch.empty_like(probs).exponential_(generator=self._shared_generator(probs.device))
        for row, generator in metadata.generators.items():
            noise[row].exponential_(generator=generator)
        return argmax_rows(probs / noise)


def sampling_probs(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
    """The distribution each row draws from: temperature (1 for greedy rows), top-k/top-p, min-p."""
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
    return probs


@hookimpl
def register_samplers(register):
    register("default", DefaultSampler, "greedy, temperature, top-k/top-p/min-p, seeds")

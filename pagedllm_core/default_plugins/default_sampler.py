"""The ``default`` sampler: greedy, temperature, top-k and top-p, batched on tensors."""

from __future__ import annotations

import torch

from pagedllm_core.hookspecs import hookimpl
from pagedllm_core.sampling.sampler import Sampler, SamplingMetadata


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
        greedy_tokens = logits.argmax(dim=-1)
        if metadata.all_greedy:
            return greedy_tokens
        temperature = torch.where(metadata.temperature > 0, metadata.temperature, 1.0)
        logits = logits / temperature.unsqueeze(-1)
        if not (metadata.no_top_k and metadata.no_top_p):
            logits = apply_top_k_top_p(
                logits,
                None if metadata.no_top_k else metadata.top_k,
                None if metadata.no_top_p else metadata.top_p,
            )
        probs = logits.softmax(dim=-1)
        noise = torch.empty_like(probs).exponential_(generator=self._shared_generator(probs.device))
        for row, generator in metadata.generators.items():
            noise[row].exponential_(generator=generator)
        sampled_tokens = (probs / noise).argmax(dim=-1)
        return torch.where(metadata.temperature > 0, sampled_tokens, greedy_tokens)


@hookimpl
def register_samplers(register):
    register("default", DefaultSampler, "greedy, temperature, top-k, top-p, per-request seeds")

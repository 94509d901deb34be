"""The sampler contract and the batched parameters it receives each step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.sampling_params import SamplingParams


@dataclass
class SamplingMetadata:
    """The sampling parameters of a step's rows, as tensors on the logits' device (one row per sequence)."""

    temperature: torch.Tensor  # [num_rows] float32; 0 for greedy rows
    top_k: torch.Tensor  # [num_rows] int64; vocab size where disabled
    top_p: torch.Tensor  # [num_rows] float32; 1 where disabled
    all_greedy: bool
    no_top_k: bool
    no_top_p: bool
    # Rows whose request brought a seed draw from their own generator, so batch mates do not matter.
    generators: dict[int, torch.Generator] = field(default_factory=dict)

    @classmethod
    def from_params(
        cls,
        params: list[SamplingParams],
        generators: dict[int, torch.Generator],
        vocab_size: int,
        device: torch.device,
    ) -> SamplingMetadata:
        top_k = [p.top_k if p.top_k > 0 else vocab_size for p in params]
        return cls(
            temperature=torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device),
            top_k=torch.tensor(top_k, dtype=torch.int64, device=device),
            top_p=torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device),
            all_greedy=all(p.is_greedy for p in params),
            no_top_k=all(k >= vocab_size for k in top_k),
            no_top_p=all(p.top_p >= 1.0 for p in params),
            generators=generators,
        )


class Sampler(ABC):
    """Picks one next token per row of logits."""

    def __init__(self, config: EngineConfig):
        self.config = config

    @abstractmethod
    def sample(self, logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
        """``logits``: float32 ``[num_rows, vocab_size]`` -> token ids ``[num_rows]`` int64."""

"""Per-request decoding settings, named and validated as vLLM users know them."""

from __future__ import annotations

from dataclasses import dataclass, field

from pagedllm_core.errors import ConfigError


@dataclass
class SamplingParams:
    """How to pick tokens for one request and when to stop.

    ``temperature=0`` is greedy. ``top_k`` of 0 or -1 and ``top_p`` of 1 disable those filters.
    ``seed`` makes this request's samples reproducible whatever else shares its batch.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    max_tokens: int | None = 16
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise ConfigError(f"top_k must be -1 or 0 (disabled) or a positive count, got {self.top_k}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be in [0, 2**63), got {self.seed}")
        if any(not isinstance(token, int) or token < 0 for token in self.stop_token_ids):
            raise ConfigError(f"stop_token_ids must be non-negative integers, got {self.stop_token_ids}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

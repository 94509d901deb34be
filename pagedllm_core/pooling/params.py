"""Per-request embedding settings (vLLM's ``PoolingParams``)."""

from __future__ import annotations

from dataclasses import dataclass

from pagedllm_core.errors import ConfigError


@dataclass(frozen=True)
class PoolingParams:
    """How one prompt's embedding is finished; None keeps the model's default."""

    dimensions: int | None = None
    """Keep only the first ``dimensions`` values (Matryoshka models only), normalized again if normalizing."""
    normalize: bool | None = None
    """Scale the embedding to unit length; None takes the model's pooler setting."""

    def __post_init__(self):
        if self.dimensions is not None and self.dimensions < 1:
            raise ConfigError(f"dimensions must be at least 1, got {self.dimensions}")

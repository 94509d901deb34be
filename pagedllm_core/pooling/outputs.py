"""What embedding returns, in vLLM's shape: ``output.outputs.embedding``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EmbeddingOutput:
    """One prompt's embedding."""

    embedding: list[float]

    @property
    def hidden_size(self) -> int:
        return len(self.embedding)


@dataclass
class EmbeddingRequestOutput:
    """An embedded prompt: its token ids and its embedding (always finished)."""

    request_id: str
    outputs: EmbeddingOutput
    prompt_token_ids: list[int]
    finished: bool = True

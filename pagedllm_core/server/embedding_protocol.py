"""``POST /v1/embeddings`` request and response bodies (OpenAI's, plus vLLM's ``truncate_prompt_tokens``)."""

from __future__ import annotations

import base64
import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pagedllm_core.pooling.params import PoolingParams

# OpenAI's limit on inputs per request.
MAX_EMBEDDING_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``. Unknown fields are accepted and ignored, as for the other routes."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="A served model name; omitted means the first one.")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string, a list of strings, a list of token ids, or a list of token-id lists."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(None, ge=1, description="Cut embeddings to this size (Matryoshka models only).")
    user: str | None = Field(None, description="An end-user id; accepted and not used.")
    truncate_prompt_tokens: int | None = Field(
        None, ge=1, description="vLLM extension: keep each input's last tokens instead of rejecting a long input."
    )

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value):
        if value == "" or value == [] or (isinstance(value, list) and any(item in ("", []) for item in value)):
            raise ValueError("must not be empty, nor contain an empty string or an empty token list")
        if isinstance(value, list) and len(value) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request, got {len(value)}")
        return value

    def inputs(self) -> list[str | list[int]]:
        """One entry per input: text, or token ids."""
        if isinstance(self.input, str) or isinstance(self.input[0], int):
            return [self.input]
        return list(self.input)

    def to_pooling_params(self) -> PoolingParams:
        return PoolingParams(dimensions=self.dimensions)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[EmbeddingData]
    usage: EmbeddingUsage


def encode_embedding(embedding: list[float], encoding_format: str) -> list[float] | str:
    """An embedding as the request's ``encoding_format`` asks (the openai client asks for base64 by default)."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(embedding, dtype="<f4").tobytes()).decode("ascii")
    return embedding

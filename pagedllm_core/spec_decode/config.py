"""``speculative_config``: how (and whether) the engine drafts tokens for the target model to verify."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SpeculativeConfig(BaseModel):
    """Speculative decoding, with vLLM's keys: ``{"method": "ngram", "num_speculative_tokens": 4}``.

    ``ngram`` drafts by prompt lookup: the longest suffix of the sequence (between ``prompt_lookup_min``
    and ``prompt_lookup_max`` tokens) that occurred earlier in it proposes the tokens that followed it.
    ``draft_model`` runs a smaller model sharing the target's tokenizer (``model``), with its own KV
    cache. Leaving ``model`` out drafts with the target's own checkpoint under another ``quantization``:
    a quantized self-draft, e.g. the GGUF blocks drafting for the same model run with dense weights.
    Given as a JSON string (the command line) it is parsed first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["ngram", "draft_model"] = Field(description="How draft tokens are proposed.")
    num_speculative_tokens: int = Field(
        ge=1, le=32, description="Draft tokens proposed per sequence and step (the target verifies them in one pass)."
    )
    prompt_lookup_min: int | None = Field(
        None, ge=1, description="ngram: the shortest suffix matched (default 2, or prompt_lookup_max if smaller)."
    )
    prompt_lookup_max: int | None = Field(
        None, ge=1, description="ngram: the longest suffix matched (default 5, or prompt_lookup_min if larger)."
    )
    model: str | None = Field(
        None,
        description="draft_model: the draft's local directory, .gguf file or Hub id; None drafts with the target's "
        "own checkpoint (then give a quantization that differs from the target's).",
    )
    quantization: str | None = Field(
        None, min_length=1, description="draft_model: the draft's quantization method (default auto)."
    )

    @model_validator(mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as error:
                example = '{"method": "ngram", "num_speculative_tokens": 4}'
                raise ValueError(f"must be a JSON object such as '{example}': {error}") from None
        return value

    @model_validator(mode="after")
    def _check_method_settings(self) -> SpeculativeConfig:
        if self.method == "ngram":
            if self.model is not None or self.quantization is not None:
                raise ValueError(
                    "method 'ngram' drafts from the sequence itself; model and quantization belong to 'draft_model'"
                )
            low, high = self.prompt_lookup_min, self.prompt_lookup_max
            if low is not None and high is not None and low > high:
                raise ValueError(f"prompt_lookup_min ({low}) must not exceed prompt_lookup_max ({high})")
        else:
            if self.prompt_lookup_min is not None or self.prompt_lookup_max is not None:
                raise ValueError("prompt_lookup_min and prompt_lookup_max belong to method 'ngram'")
            if self.model is None and self.quantization is None:
                raise ValueError(
                    "method 'draft_model' needs a draft model, or a quantization for drafting with the target's own "
                    "checkpoint (e.g. {\"method\": \"draft_model\", \"quantization\": \"gguf\", ...})"
                )
        return self

    @property
    def lookup_range(self) -> tuple[int, int]:
        """ngram: (shortest, longest) suffix lengths matched."""
        low, high = self.prompt_lookup_min, self.prompt_lookup_max
        if low is None and high is None:
            return 2, 5
        if low is None:
            return min(2, high), high
        if high is None:
            return low, max(5, low)
        return low, high

    @property
    def uses_draft_model(self) -> bool:
        return self.method == "draft_model"

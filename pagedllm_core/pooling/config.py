"""The embedding settings: which task the model serves and how its hidden states are pooled.

These belong with ``EngineConfig`` (vLLM keeps ``task`` and ``override_pooler_config`` on its model
config); they live here until the engine config takes them, and reach the engine through ``LLM(...)``
and the ``serve`` flags ``--task`` and ``--override-pooler-config``.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pagedllm_core.config import format_validation_error
from pagedllm_core.errors import ConfigError

Task = Literal["auto", "generate", "embed"]
PoolingTypeName = Literal["LAST", "MEAN", "CLS"]


class PoolerConfig(BaseModel):
    """How an embedding is pooled from a sequence's hidden states; unset fields come from the checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pooling_type: PoolingTypeName | None = Field(
        None,
        description="LAST (the last token's state), MEAN (average over all tokens) or CLS (the first token's); "
        "default: the sentence-transformers pooling config, else CLS for encoders and LAST for decoders.",
    )
    normalize: bool | None = Field(
        None,
        description="Scale embeddings to unit length; default: whether the sentence-transformers modules end "
        "with Normalize, else true.",
    )


class PoolingConfig(BaseModel):
    """Which task the model serves, and the pooler settings when that task is ``embed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Task = Field(
        "auto",
        description="generate (text generation) or embed (embeddings); auto picks embed for encoder checkpoints "
        "(a BERT architecture or sentence-transformers modules.json) and generate otherwise.",
    )
    override_pooler_config: PoolerConfig = Field(
        default_factory=PoolerConfig, description="Pooling settings that replace the checkpoint's."
    )

    @classmethod
    def build(cls, task: str = "auto", override_pooler_config: PoolerConfig | dict | str | None = None) -> PoolingConfig:
        """Validate; ``override_pooler_config`` may be JSON text (the command line's form)."""
        if isinstance(override_pooler_config, str):
            try:
                override_pooler_config = json.loads(override_pooler_config)
            except json.JSONDecodeError as error:
                raise ConfigError(
                    f"override_pooler_config: not JSON ({error}); expected e.g. "
                    '\'{"pooling_type": "MEAN", "normalize": true}\''
                ) from None
        try:
            return cls(task=task, override_pooler_config=override_pooler_config or PoolerConfig())
        except ValidationError as error:
            raise ConfigError(format_validation_error(error)) from None

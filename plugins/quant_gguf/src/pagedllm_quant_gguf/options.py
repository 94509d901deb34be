"""What a user can set for the ``gguf`` method: ``plugin_options={"quantization": {...}}``."""

from __future__ import annotations

from pydantic import Field

from pagedllm_core.plugin_options import PluginOptions

# Steps with at most this many rows read the blocks unless the user sets ``max_block_rows``: the crossover
# on the default model's decode steps (docs/quantization.md).
DEFAULT_MAX_BLOCK_ROWS = 16


class GGUFOptions(PluginOptions):
    """``plugin_options={"quantization": {...}}`` of the gguf method."""

    max_block_rows: int = Field(
        DEFAULT_MAX_BLOCK_ROWS,
        ge=0,
        description="Steps of up to this many rows run from the blocks; larger ones dequantize each weight for the "
        "step and multiply densely (raise it for memory-bound machines, lower it for batch-heavy serving).",
    )
    int8_activations: bool = Field(
        False,
        description="Steps that run from the blocks round their activations to int8 in groups of 32, each with its "
        "own scale, and multiply in integers, as llama.cpp does: about twice as fast on one thread, with results "
        "that differ from the float32 products by that rounding (docs/quantization.md).",
    )

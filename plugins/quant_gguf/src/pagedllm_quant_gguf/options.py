"""What a user can set for the ``gguf`` method: ``plugin_options={"quantization": {...}}``."""

from __future__ import annotations

from types import ModuleType

from pydantic import Field

from pagedllm_core.plugin_options import PluginOptions

# Steps of more rows than this dequantize each weight unless the user sets ``max_block_rows``, where the kernel is
# built with AVX2's 8-float vectors: about where its tiles and a dense matmul of the dequantized weight cross over
# (docs/quantization.md). Built with AVX-512 the kernel is the faster one at every step size measured.
AVX2_MAX_BLOCK_ROWS = 64
# The same without vector code (no AVX2: other CPUs), where the kernel multiplies one weight row at a time: the
# crossover measured before the tiles existed.
SCALAR_MAX_BLOCK_ROWS = 16


def default_max_block_rows(kernels: ModuleType) -> int | None:
    """``max_block_rows`` when the user does not set it, for the kernel as built on this machine: None (every
    step runs from the blocks) with AVX-512's 16-float vectors, :data:`AVX2_MAX_BLOCK_ROWS` with AVX2's 8, else
    :data:`SCALAR_MAX_BLOCK_ROWS`."""
    vector_floats = kernels.vector_floats()
    if vector_floats >= 16:
        return None
    return AVX2_MAX_BLOCK_ROWS if vector_floats == 8 else SCALAR_MAX_BLOCK_ROWS


class GGUFOptions(PluginOptions):
    """``plugin_options={"quantization": {...}}`` of the gguf method."""

    max_block_rows: int | None = Field(
        None,
        ge=0,
        description="Steps of up to this many rows run from the blocks; larger ones dequantize each weight for the "
        "step and multiply densely. Default: every step where the kernel is built with AVX-512, 64 rows with AVX2, "
        "16 without either.",
    )
    int8_activations: bool = Field(
        False,
        description="Steps that run from the blocks round their activations to int8 in groups of 32, each with its "
        "own scale, and multiply in integers, as llama.cpp does: faster on CPUs without AVX-512 (with it, the float "
        "path is as fast), with results that differ from the float32 products by that rounding "
        "(docs/quantization.md).",
    )

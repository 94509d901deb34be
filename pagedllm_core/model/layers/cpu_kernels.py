"""The CPU kernels of the decoder layers, one C++ call each (``csrc/cpu_layer_kernels.cpp``).

On a single-stream decode step a row holds a few hundred values, so what torch spends on these
layers is mostly dispatch: its CPU ``rms_norm`` is a composite of about ten kernels (square, sum,
divide, add, rsqrt, two multiplies, dtype round trips), the residual add before it one more, and
the gated MLP's ``silu(gate) * up`` a split, a silu and a multiply. Each kernel here does the same
arithmetic in one pass per row, on float32, bfloat16 or float16 rows; half-precision values are
widened to float32 for it and rounded back wherever the layers' torch ops round (after each op), so
the kernels give what those ops give in every dtype:

- ``rms_norm(x, weight, eps)``: ``x * rsqrt(mean(x * x) + eps) * weight``; only the sum of squares
  is added up in another order than torch's, so results may differ from ``F.rms_norm`` in the last bit.
- ``fused_add_rms_norm(x, residual, weight, eps)``: ``residual += x`` in place, then
  ``rms_norm(residual)``; bit-identical to the add followed by ``rms_norm``.
- ``silu_and_mul(x, vector_block)``: ``silu(gate) * up`` for ``x = [gate, up]`` along the last
  dimension; on x86, with ``vector_block`` from :func:`silu_vector_block`, bit-identical to
  ``F.silu(gate) * up`` as torch computes it on one thread (elsewhere within an ulp of SLEEF's ``expf``
  before rounding).
- ``rotate_heads(heads, cos, sin)``: :meth:`RotaryEmbedding.rotate_heads
  <pagedllm_core.model.layers.rotary.RotaryEmbedding.rotate_heads>` in one pass, bit-identical to it.

The same extension holds ``LlamaDecoderProgram``, which runs these kernels and the layers' registered
operators for every decoder layer of a decode step in one call (:mod:`pagedllm_core.model.native_decode`).

The extension compiles on first use on a machine (about a minute, needs a C++ compiler and ninja),
then loads from torch's extension cache; without them :func:`load_kernels` returns None and the
layers keep their torch code.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import ModuleType

import torch

from pagedllm_core.cpp_extensions import load_cpp_extension

logger = logging.getLogger(__name__)

SOURCES = tuple(Path(__file__).parent / "csrc" / name for name in ("cpu_layer_kernels.cpp", "decoder_program.cpp", "bindings.cpp"))

# torch's elementwise CPU loops take two vectors of the rows' dtype at a time and finish each row with scalar
# code: 2 x 16 floats with AVX-512, 2 x 8 with AVX2, twice as many 2-byte values; without vector units every
# value takes the scalar code.
_VECTOR_BYTES = {"AVX512": 128, "AVX2": 64}
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@functools.cache
def load_kernels() -> ModuleType | None:
    """The compiled extension, or None (logged once) when it cannot be built here."""
    try:
        return load_cpp_extension("pagedllm_cpu_layer_kernels", *SOURCES)
    except Exception as error:  # noqa: BLE001 - no compiler or ninja: the layers' torch code does the work
        logger.info("decoder layers keep their torch ops: the C++ kernels could not be built (%s)", error)
        return None


def kernels_for(rows: torch.Tensor) -> ModuleType | None:
    """The kernels when ``rows`` are float32, bfloat16 or float16 on a CPU outside autograd (what they
    compute), else None."""
    if rows.dtype in KERNEL_DTYPES and rows.device.type == "cpu" and not torch.is_grad_enabled():
        return load_kernels()
    return None


@functools.cache
def silu_vector_block(dtype: torch.dtype) -> int:
    """How many values of a ``dtype`` row torch's silu takes per vectorised step (0: none), for ``silu_and_mul``."""
    return _VECTOR_BYTES.get(torch.backends.cpu.get_cpu_capability(), 0) // dtype.itemsize

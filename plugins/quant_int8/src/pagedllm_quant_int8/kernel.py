"""W8A8 int8 matrix products on the CPU: per-token int8 activations times per-channel int8 weights.

The int8 product runs in oneDNN (VNNI instructions where the CPU has them) from a weight packed
once at load time (``onednn.qlinear_prepack``). oneDNN takes unsigned activations with a zero
point, so each row quantized to [-127, 127] is shifted by +128 with zero point 128, which it
subtracts exactly; it applies the weight's per-channel scale, and the per-token scale and the bias
are applied after it, in the same C++ call. Measured against ``torch._int_mm`` (which repacks the
weight on every call) and a hand-written AVX-512 VNNI loop, this was the fastest on the machine of
docs/benchmarks.md. The
activations are quantized by a small C++ kernel (``csrc/quantize_rows.cpp``), equal to
:func:`quantize_per_token` plus the shift. The whole product is also the extension's registered operator
``linear``, which the decoder program calls (``Int8Linear.native_op``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

import torch

from pagedllm_core.cpp_extensions import load_cpp_extension

INT8_MAX = 127
# oneDNN's activations are uint8; a symmetric int8 row shifted by this is exact (csrc/quantize_rows.cpp).
ACTIVATION_ZERO_POINT = 128


def quantize_per_token(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` ``[m, k]`` as int8 and each row's float32 scale ``[m, 1]`` (symmetric, amax / 127)."""
    rows = rows.float()
    scales = rows.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-10) / INT8_MAX
    return torch.round(rows / scales).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8), scales


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` ``[n, k]`` as int8 and each output channel's float32 scale ``[n]``."""
    weight = weight.float()
    scales = weight.abs().amax(dim=-1).clamp_(min=1e-10) / INT8_MAX
    return torch.round(weight / scales[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8), scales


@functools.cache
def load_kernels() -> ModuleType:
    """The compiled activation quantizer (built on first use on a machine, then cached)."""
    return load_cpp_extension("pagedllm_quant_int8", Path(__file__).parent / "csrc" / "quantize_rows.cpp")


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` int8 ``[n, k]`` in oneDNN's layout for :func:`int8_linear`."""
    return torch.ops.onednn.qlinear_prepack(weight, None)


def int8_linear(
    rows: torch.Tensor, packed_weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``rows @ (W * weight_scale).T + bias`` with ``rows`` quantized per token on the way (one C++ call: the
    quantization, oneDNN's int8 product with the activations' zero point, the per-token scales and the bias).

    :param rows: ``[m, k]`` in the model's dtype
    :param packed_weight: ``W`` (int8 ``[n, k]``) from :func:`pack_weight`; ``weight_scale``: float32 ``[n]``
    :returns: ``[m, n]`` in ``rows``' dtype
    """
    return load_kernels().int8_linear(rows, packed_weight, weight_scale, weight_zero_points(weight_scale), bias)


def weight_zero_points(weight_scale: torch.Tensor) -> torch.Tensor:
    """The all-zero per-channel zero points oneDNN's product takes with ``weight_scale`` (the weights are symmetric)."""
    return torch.zeros(weight_scale.shape, dtype=torch.int64)

"""Loading the plugin's C++ kernel (x @ W from AWQ's 4-bit weights on the CPU)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from pagedllm_core.cpp_extensions import load_cpp_extension

SOURCE = Path(__file__).parent / "csrc" / "awq_linear.cpp"
BLOCK_COLUMNS = 64  # the kernel layout's block of columns (kBlockColumns)


def load_kernels() -> ModuleType:
    """The compiled extension, exposing ``awq_repack``, ``awq_linear`` and ``awq_dequantize`` (built on first
    use on a machine, then cached)."""
    return load_cpp_extension("pagedllm_quant_awq", SOURCE)


def to_kernel_layout(
    kernels: ModuleType, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checkpoint's ``(qweight, qzeros, scales)`` rearranged for ``awq_linear`` (still 4-bit): columns in
    blocks of 64 whose nibbles unpack to consecutive columns, padded to a whole block, each block's rows
    together (see the C++ source)."""
    num_groups, out_features = scales.shape
    num_blocks = -(-out_features // BLOCK_COLUMNS)
    padded_scales = torch.nn.functional.pad(scales.to(torch.float16), (0, num_blocks * BLOCK_COLUMNS - out_features))
    return (
        kernels.awq_repack(qweight.contiguous(), out_features),
        kernels.awq_repack(qzeros.contiguous(), out_features),
        padded_scales.view(num_groups, num_blocks, BLOCK_COLUMNS).transpose(0, 1).contiguous(),
    )

"""AWQ's GEMM checkpoint layout in plain torch: packing 4-bit values, and the dequantizing reference.

A weight ``W [in_features, out_features]`` (note: input-major, the transpose of ``nn.Linear.weight``) is stored as

- ``qweight`` int32 ``[in, out / 8]``: nibble ``i`` (bits ``4i..4i+3``) of word ``j`` is column ``8j + AWQ_ORDER[i]``;
- ``qzeros`` int32 ``[in / group_size, out / 8]``, packed the same way;
- ``scales`` float16 ``[in / group_size, out]``;

and ``W[k, n] = (q[k, n] - z[k // group_size, n]) * s[k // group_size, n]``. These functions are the oracle the
kernels are tested against and what ``pagedllm quantize`` writes with.
"""

from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
PACK_FACTOR = 8  # 4-bit values per int32 word


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Integers 0..15 ``[rows, columns]`` -> AWQ-packed int32 ``[rows, columns / 8]``."""
    rows, columns = values.shape
    if columns % PACK_FACTOR:
        raise ValueError(f"AWQ packs 8 values per int32 word; {columns} columns is not a multiple of 8")
    grouped = values.to(torch.int64).reshape(rows, columns // PACK_FACTOR, PACK_FACTOR)
    packed = torch.zeros(rows, columns // PACK_FACTOR, dtype=torch.int64)
    for nibble, column in enumerate(AWQ_ORDER):
        packed |= (grouped[..., column] & 0xF) << (4 * nibble)
    return _as_int32(packed)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """AWQ-packed int32 ``[rows, words]`` -> integers 0..15 as uint8 ``[rows, words * 8]``."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    columns = [None] * PACK_FACTOR
    for nibble, column in enumerate(AWQ_ORDER):
        columns[column] = (words >> (4 * nibble)) & 0xF
    return torch.stack(columns, dim=-1).reshape(packed.shape[0], -1).to(torch.uint8)


def dequantize(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """``W`` as float32 ``[in_features, out_features]`` (so ``x @ W`` is the layer without bias)."""
    quants = unpack_int4(qweight).to(torch.float32)
    zeros = unpack_int4(qzeros).to(torch.float32).repeat_interleave(group_size, dim=0)
    return (quants - zeros) * scales.to(torch.float32).repeat_interleave(group_size, dim=0)


def _as_int32(values: torch.Tensor) -> torch.Tensor:
    """Unsigned 32-bit patterns held in int64 -> the same bits as int32."""
    return torch.where(values >= 2**31, values - 2**32, values).to(torch.int32)

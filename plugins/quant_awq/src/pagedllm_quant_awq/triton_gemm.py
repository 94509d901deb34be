"""x @ W (+ bias) on a GPU with Triton, W read as AWQ's packed 4-bit weights in the checkpoint layout.

Each program computes a ``[BLOCK_M, BLOCK_N]`` tile of the output: for each ``BLOCK_K`` slice of the input it
loads the int32 words of the tile's columns, shifts each column's nibble out (AWQ keeps column ``8j + c`` in
nibble ``(c % 2) * 4 + c // 2`` of word ``j``, the inverse of its order 0, 2, 4, 6, 1, 3, 5, 7), subtracts the
zero point, multiplies by the float16 scale and accumulates ``x @ w`` with ``tl.dot`` in float32. The dense
weight exists only as that register tile. Runs in Triton's interpreter on a CPU (``TRITON_INTERPRET=1``),
which is how its tests check it against :func:`pagedllm_quant_awq.packing.dequantize`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_M, BLOCK_N, BLOCK_K = 16, 64, 32


@triton.jit
def awq_gemm_kernel(
    x_ptr, qweight_ptr, qzeros_ptr, scales_ptr, bias_ptr, out_ptr,
    M, N, K, group_size,
    HAS_BIAS: tl.constexpr, IEEE_FLOAT32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    columns = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    within_word = columns % 8
    shifts = ((within_word % 2) * 4 + within_word // 2) * 4
    words = columns // 8
    num_words = N // 8
    column_mask = columns < N
    accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, K, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        x = tl.load(x_ptr + rows[:, None] * K + ks[None, :], mask=(rows[:, None] < M) & k_mask[None, :], other=0.0)
        weight_mask = k_mask[:, None] & column_mask[None, :]
        packed = tl.load(qweight_ptr + ks[:, None] * num_words + words[None, :], mask=weight_mask, other=0)
        groups = ks // group_size
        packed_zeros = tl.load(qzeros_ptr + groups[:, None] * num_words + words[None, :], mask=weight_mask, other=0)
        scales = tl.load(scales_ptr + groups[:, None] * N + columns[None, :], mask=weight_mask, other=0.0)
        quants = (packed >> shifts[None, :]) & 0xF
        zeros = (packed_zeros >> shifts[None, :]) & 0xF
        weights = (quants - zeros).to(tl.float32) * scales.to(tl.float32)
        if IEEE_FLOAT32:
            accumulator += tl.dot(x.to(tl.float32), weights, input_precision="ieee")
        else:
            accumulator += tl.dot(x, weights.to(x.dtype))
    if HAS_BIAS:
        accumulator += tl.load(bias_ptr + columns, mask=column_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(
        out_ptr + rows[:, None] * N + columns[None, :],
        accumulator.to(out_ptr.dtype.element_ty),
        mask=(rows[:, None] < M) & column_mask[None, :],
    )


def awq_gemm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x [M, K] @ W + bias`` -> ``[M, N]`` in ``x``'s dtype; ``W`` as AWQ's ``qweight [K, N/8]``, ``qzeros``,
    ``scales [K/group_size, N]``. float32 inputs multiply in full float32 precision, half types on tensor cores."""
    num_rows, in_features = x.shape
    out_features = scales.shape[1]
    x = x.contiguous()
    out = torch.empty(num_rows, out_features, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(num_rows, BLOCK_M), triton.cdiv(out_features, BLOCK_N))
    awq_gemm_kernel[grid](
        x, qweight, qzeros, scales, bias if bias is not None else scales, out,
        num_rows, out_features, in_features, group_size,
        HAS_BIAS=bias is not None, IEEE_FLOAT32=x.dtype == torch.float32,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
    )
    return out

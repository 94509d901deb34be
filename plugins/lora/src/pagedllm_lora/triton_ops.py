"""The batched LoRA op as two Triton kernels (Punica's BGMV): each row gathers its own slot's A and B.

``shrink``: ``shrunk[t] = x[t] @ lora_a[slot[t]].T`` (``[num_rows, P * R]``, every projection at
once), ``expand``: ``output[t, cols_p] += shrunk[t, p * R : (p + 1) * R] @ lora_b[slot[t], :, cols_p]``,
launched once per projection ``p`` on its columns; rows of slot -1 (the base model) are skipped. One
program handles one row and one tile of the output, so a batch mixing any number of adapters is one
launch per kernel (per projection). Layouts as in :mod:`pagedllm_lora.punica`, whose ops are their
oracle; under ``TRITON_INTERPRET=1`` they run on the CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_K = 64
BLOCK_N = 64


@triton.jit
def _shrink_kernel(x_ptr, a_ptr, slots_ptr, out_ptr, in_features, width,
                   stride_x, stride_a_slot, stride_a_row, stride_out,
                   BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0)
    slot = tl.load(slots_ptr + row)
    if slot >= 0:
        ranks = tl.arange(0, BLOCK_R)
        acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
        for start in range(0, in_features, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + row * stride_x + cols, mask=cols < in_features, other=0.0).to(tl.float32)
            a = tl.load(
                a_ptr + slot * stride_a_slot + ranks[:, None] * stride_a_row + cols[None, :],
                mask=(ranks[:, None] < width) & (cols[None, :] < in_features),
                other=0.0,
            ).to(tl.float32)
            acc += tl.sum(a * x[None, :], axis=1)
        tl.store(out_ptr + row * stride_out + ranks, acc, mask=ranks < width)


@triton.jit
def _expand_kernel(shrunk_ptr, b_ptr, slots_ptr, out_ptr, out_features, width,
                   stride_shrunk, stride_b_slot, stride_b_row, stride_out,
                   BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    slot = tl.load(slots_ptr + row)
    if slot >= 0:
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        ranks = tl.arange(0, BLOCK_R)
        shrunk = tl.load(shrunk_ptr + row * stride_shrunk + ranks, mask=ranks < width, other=0.0)
        b = tl.load(
            b_ptr + slot * stride_b_slot + ranks[:, None] * stride_b_row + cols[None, :],
            mask=(ranks[:, None] < width) & (cols[None, :] < out_features),
            other=0.0,
        ).to(tl.float32)
        delta = tl.sum(shrunk[:, None] * b, axis=0)
        pointers = out_ptr + row * stride_out + cols
        current = tl.load(pointers, mask=cols < out_features, other=0.0)
        tl.store(pointers, (current.to(tl.float32) + delta).to(current.dtype), mask=cols < out_features)


def add_lora(output: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
             token_slots: torch.Tensor, output_sizes: list[int]) -> torch.Tensor:
    """``output[t] += (x[t] @ lora_a[s].T) @ lora_b[s]`` per projection, ``s = token_slots[t]`` (-1: none); in place."""
    num_rows, in_features = x.shape
    _, rank, _ = lora_b.shape
    width = lora_a.shape[1]
    x, lora_a, lora_b = x.contiguous(), lora_a.contiguous(), lora_b.contiguous()
    token_slots = token_slots.to(device=x.device, dtype=torch.int32).contiguous()
    shrunk = torch.zeros(num_rows, width, device=x.device, dtype=torch.float32)
    _shrink_kernel[(num_rows,)](
        x, lora_a, token_slots, shrunk, in_features, width,
        x.stride(0), lora_a.stride(0), lora_a.stride(1), shrunk.stride(0),
        BLOCK_R=max(triton.next_power_of_2(width), 16), BLOCK_K=BLOCK_K,
    )
    start = 0
    for index, size in enumerate(output_sizes):
        # Views of this projection's columns and rank rows: the kernel reads them through the strides given.
        _expand_kernel[(num_rows, triton.cdiv(size, BLOCK_N))](
            shrunk[:, index * rank :], lora_b[:, :, start:], token_slots, output[:, start:], size, rank,
            shrunk.stride(0), lora_b.stride(0), lora_b.stride(1), output.stride(0),
            BLOCK_R=max(triton.next_power_of_2(rank), 16), BLOCK_N=BLOCK_N,
        )
        start += size
    return output

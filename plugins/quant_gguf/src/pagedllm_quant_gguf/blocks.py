"""ggml's quantized block formats (Q4_0, Q4_1, Q8_0) and a pure-torch dequantizer for them.

A quantized weight matrix keeps one output feature per tensor row: ``in_features // 32`` consecutive
blocks of 32 values, each a float16 scale (and, for Q4_1, a float16 minimum) followed by the quants.
In the 4-bit formats byte j of the 16 quant bytes holds value j in its low nibble and value j + 16 in
its high nibble. ``dequantize`` is the oracle for the C++ kernel and matches
``gguf.quants.dequantize`` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# ggml type ids, as stored in GGUF files.
Q4_0 = 2
Q4_1 = 3
Q8_0 = 8


@dataclass(frozen=True)
class BlockFormat:
    """The layout of one ggml quantized block."""

    name: str
    values_per_block: int
    bytes_per_block: int


BLOCK_FORMATS: dict[int, BlockFormat] = {
    Q4_0: BlockFormat("Q4_0", values_per_block=32, bytes_per_block=18),  # fp16 scale, 16 bytes of nibbles
    Q4_1: BlockFormat("Q4_1", values_per_block=32, bytes_per_block=20),  # fp16 scale, fp16 minimum, nibbles
    Q8_0: BlockFormat("Q8_0", values_per_block=32, bytes_per_block=34),  # fp16 scale, 32 int8
}
SUPPORTED_QUANT_TYPES: tuple[int, ...] = tuple(BLOCK_FORMATS)


def block_format(quant_type: int) -> BlockFormat:
    """The format of ggml type id ``quant_type``; ValueError naming the supported ones otherwise."""
    if quant_type not in BLOCK_FORMATS:
        supported = ", ".join(f"{type_id} ({fmt.name})" for type_id, fmt in BLOCK_FORMATS.items())
        raise ValueError(f"unsupported ggml quant type {quant_type}; supported: {supported}")
    return BLOCK_FORMATS[quant_type]


def dequantize(blocks: torch.Tensor, quant_type: int, in_features: int) -> torch.Tensor:
    """Float32 weights ``[out_features, in_features]`` from ggml blocks.

    Args:
        blocks: uint8 ``[out_features, (in_features // 32) * bytes_per_block]``, one weight row per row.
        quant_type: ggml type id, one of ``SUPPORTED_QUANT_TYPES``.
        in_features: values per row, a multiple of 32.

    Raises ValueError for an unsupported type or blocks whose dtype or shape do not fit.
    """
    fmt = block_format(quant_type)
    if blocks.dtype != torch.uint8 or blocks.dim() != 2:
        raise ValueError(f"blocks must be a 2-D uint8 tensor, got {blocks.dtype} of shape {tuple(blocks.shape)}")
    if in_features <= 0 or in_features % fmt.values_per_block:
        raise ValueError(f"in_features must be a positive multiple of {fmt.values_per_block}, got {in_features}")
    num_blocks = in_features // fmt.values_per_block
    if blocks.shape[1] != num_blocks * fmt.bytes_per_block:
        raise ValueError(
            f"blocks rows are {blocks.shape[1]} bytes, but {in_features} values of {fmt.name} take "
            f"{num_blocks * fmt.bytes_per_block} ({num_blocks} blocks of {fmt.bytes_per_block} bytes)"
        )

    out_features = blocks.shape[0]
    grouped = blocks.reshape(out_features, num_blocks, fmt.bytes_per_block)
    scale = _float16_at(grouped, 0)  # [out_features, num_blocks, 1]
    # The float32 operations below are gguf-py's, in its order, so the results are bit-identical.
    if quant_type == Q8_0:
        values = grouped[..., 2:].view(torch.int8).to(torch.float32) * scale
    elif quant_type == Q4_0:
        values = scale * (_nibbles(grouped[..., 2:]).to(torch.int8) - 8).to(torch.float32)
    else:
        minimum = _float16_at(grouped, 2)
        values = scale * _nibbles(grouped[..., 4:]).to(torch.float32) + minimum
    return values.reshape(out_features, in_features)


def _float16_at(grouped: torch.Tensor, offset: int) -> torch.Tensor:
    """The float16 at byte ``offset`` of every block, as float32 ``[..., 1]``."""
    return grouped[..., offset : offset + 2].contiguous().view(torch.float16).to(torch.float32)


def _nibbles(quant_bytes: torch.Tensor) -> torch.Tensor:
    """The 32 4-bit values of each block's 16 bytes, in value order: low nibbles, then high nibbles."""
    return torch.cat([quant_bytes & 0x0F, quant_bytes >> 4], dim=-1)

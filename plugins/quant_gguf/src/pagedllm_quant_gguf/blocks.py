"""ggml's quantized block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q4_K, Q5_K, Q6_K) and a
pure-torch dequantizer for them.

A quantized weight matrix keeps one output feature per tensor row: consecutive blocks of 32 values
(256 for the K-quants' super-blocks), each holding its scales and its quants.

- Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: a float16 scale d (and, for Q4_1 and Q5_1, a float16 minimum), then
  the quants. In the 4- and 5-bit formats byte j of the 16 nibble bytes holds value j in its low
  nibble and value j + 16 in its high nibble; the 5-bit formats put 4 bytes before them whose bit j
  (little-endian) is value j's fifth bit.
- Q4_K, Q5_K: float16 d and dmin, 12 bytes packing a 6-bit scale and a 6-bit minimum for each of the
  8 sub-blocks of 32 values, (Q5_K only) 32 bytes of fifth bits, then 128 nibble bytes; value i of
  sub-block j is ``d * scale_j * q - dmin * min_j``.
- Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales (one per 16 values),
  then float16 d; a value is ``d * scale * (q - 32)``.

``dequantize`` is the oracle for the C++ kernel and matches ``gguf.quants.dequantize`` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# ggml type ids, as stored in GGUF files.
Q4_0 = 2
Q4_1 = 3
Q5_0 = 6
Q5_1 = 7
Q8_0 = 8
Q4_K = 12
Q5_K = 13
Q6_K = 14


@dataclass(frozen=True)
class BlockFormat:
    """The layout of one ggml quantized block."""

    name: str
    values_per_block: int
    bytes_per_block: int
    float16_offsets: tuple[int, ...]  # where in a block its float16 factors (scales, minimums) are


BLOCK_FORMATS: dict[int, BlockFormat] = {
    # fp16 scale, 16 bytes of nibbles
    Q4_0: BlockFormat("Q4_0", values_per_block=32, bytes_per_block=18, float16_offsets=(0,)),
    # fp16 scale, fp16 minimum, 16 bytes of nibbles
    Q4_1: BlockFormat("Q4_1", values_per_block=32, bytes_per_block=20, float16_offsets=(0, 2)),
    # fp16 scale, 4 bytes of fifth bits, 16 bytes of nibbles
    Q5_0: BlockFormat("Q5_0", values_per_block=32, bytes_per_block=22, float16_offsets=(0,)),
    # fp16 scale, fp16 minimum, fifth bits, nibbles
    Q5_1: BlockFormat("Q5_1", values_per_block=32, bytes_per_block=24, float16_offsets=(0, 2)),
    # fp16 scale, 32 int8
    Q8_0: BlockFormat("Q8_0", values_per_block=32, bytes_per_block=34, float16_offsets=(0,)),
    # fp16 d and dmin, 12 bytes of packed scales and minimums, 128 bytes of nibbles
    Q4_K: BlockFormat("Q4_K", values_per_block=256, bytes_per_block=144, float16_offsets=(0, 2)),
    # as Q4_K, with 32 bytes of fifth bits before the nibbles
    Q5_K: BlockFormat("Q5_K", values_per_block=256, bytes_per_block=176, float16_offsets=(0, 2)),
    # 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales, fp16 d
    Q6_K: BlockFormat("Q6_K", values_per_block=256, bytes_per_block=210, float16_offsets=(208,)),
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
        blocks: uint8 ``[out_features, (in_features // values_per_block) * bytes_per_block]``, one weight
            row per row.
        quant_type: ggml type id, one of ``SUPPORTED_QUANT_TYPES``.
        in_features: values per row, a multiple of the format's ``values_per_block`` (32 or 256).

    Raises ValueError for an unsupported type or blocks whose dtype or shape do not fit.
    """
    fmt = block_format(quant_type)
    if blocks.dtype != torch.uint8 or blocks.dim() != 2:
        raise ValueError(f"blocks must be a 2-D uint8 tensor, got {blocks.dtype} of shape {tuple(blocks.shape)}")
    if in_features <= 0 or in_features % fmt.values_per_block:
        raise ValueError(
            f"in_features must be a positive multiple of {fmt.values_per_block} for {fmt.name}, got {in_features}"
        )
    num_blocks = in_features // fmt.values_per_block
    if blocks.shape[1] != num_blocks * fmt.bytes_per_block:
        raise ValueError(
            f"blocks rows are {blocks.shape[1]} bytes, but {in_features} values of {fmt.name} take "
            f"{num_blocks * fmt.bytes_per_block} ({num_blocks} blocks of {fmt.bytes_per_block} bytes)"
        )

    out_features = blocks.shape[0]
    grouped = blocks.reshape(out_features, num_blocks, fmt.bytes_per_block)
    # The float32 operations below are gguf-py's, in its order, so the results are bit-identical.
    return _DEQUANTIZERS[quant_type](grouped).reshape(out_features, in_features)


def _dequantize_q4_0(grouped: torch.Tensor) -> torch.Tensor:
    return _float16_at(grouped, 0) * (_nibbles(grouped[..., 2:]).to(torch.int8) - 8).to(torch.float32)


def _dequantize_q4_1(grouped: torch.Tensor) -> torch.Tensor:
    return _float16_at(grouped, 0) * _nibbles(grouped[..., 4:]).to(torch.float32) + _float16_at(grouped, 2)


def _dequantize_q5_0(grouped: torch.Tensor) -> torch.Tensor:
    quants = (_five_bit_quants(grouped[..., 2:6], grouped[..., 6:]).to(torch.int8) - 16).to(torch.float32)
    return _float16_at(grouped, 0) * quants


def _dequantize_q5_1(grouped: torch.Tensor) -> torch.Tensor:
    quants = _five_bit_quants(grouped[..., 4:8], grouped[..., 8:]).to(torch.float32)
    return _float16_at(grouped, 0) * quants + _float16_at(grouped, 2)


def _five_bit_quants(high_bytes: torch.Tensor, nibble_bytes: torch.Tensor) -> torch.Tensor:
    """Q5_0/Q5_1's 32 values per block: the nibbles, plus bit j of the 4 little-endian high bytes for value j."""
    high = (high_bytes.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 0x01  # [..., byte, bit]
    return _nibbles(nibble_bytes) | (high.flatten(-2) << 4)


def _dequantize_q8_0(grouped: torch.Tensor) -> torch.Tensor:
    return grouped[..., 2:].view(torch.int8).to(torch.float32) * _float16_at(grouped, 0)


def _dequantize_q4_k(grouped: torch.Tensor) -> torch.Tensor:
    return _dequantize_k_super_blocks(grouped, _halves_per_32_bytes(grouped[..., 16:144]))


def _dequantize_q5_k(grouped: torch.Tensor) -> torch.Tensor:
    low = _halves_per_32_bytes(grouped[..., 48:176])
    # Bit j of fifth-bit byte i belongs to value i of sub-block j.
    fifth_bits = grouped[..., 16:48].unsqueeze(-2) >> torch.arange(8, dtype=torch.uint8).view(8, 1)
    return _dequantize_k_super_blocks(grouped, low | ((fifth_bits & 0x01) << 4))


def _dequantize_k_super_blocks(grouped: torch.Tensor, quants: torch.Tensor) -> torch.Tensor:
    """Q4_K/Q5_K values from the blocks and their quants ``[..., 8 sub-blocks, 32]``."""
    scales, minimums = _k_scales_and_minimums(grouped[..., 4:16])
    d = (_float16_at(grouped, 0) * scales.to(torch.float32)).unsqueeze(-1)
    d_min = (_float16_at(grouped, 2) * minimums.to(torch.float32)).unsqueeze(-1)
    return d * quants.to(torch.float32) - d_min


def _k_scales_and_minimums(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 6-bit scales and minimums of Q4_K/Q5_K super-blocks from their 12 packed bytes.

    Bytes 0-3 and 4-7 hold sub-blocks 0-3's scales and minimums in their low 6 bits; sub-blocks 4-7
    take their low 4 bits from the halves of bytes 8-11 and their top 2 bits from the spare top bits
    of bytes 0-3 (scales) and 4-7 (minimums).
    """
    first, second, low_halves = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    scales = torch.cat([first & 0x3F, (low_halves & 0x0F) | ((first >> 6) << 4)], dim=-1)
    minimums = torch.cat([second & 0x3F, (low_halves >> 4) | ((second >> 6) << 4)], dim=-1)
    return scales, minimums


def _dequantize_q6_k(grouped: torch.Tensor) -> torch.Tensor:
    # Each half of 128 values owns 64 nibble bytes and 32 bytes of 2-bit high parts; its value 32p + i
    # (p = 0-3) is nibble p // 2 of byte 32 (p % 2) + i and bits 2p, 2p + 1 of high byte i.
    leading = grouped.shape[:-1]
    nibble_bytes = grouped[..., 0:128].reshape(*leading, 2, 1, 64)
    low = torch.cat([nibble_bytes & 0x0F, nibble_bytes >> 4], dim=-2)  # [..., half, p // 2, 64]
    high_bytes = grouped[..., 128:192].reshape(*leading, 2, 1, 32)
    high = (high_bytes >> torch.arange(0, 8, 2, dtype=torch.uint8).view(4, 1)) & 0x03  # [..., half, p, 32]
    quants = (low.reshape(*leading, 256) | (high.reshape(*leading, 256) << 4)).to(torch.int8) - 32
    scales = grouped[..., 192:208].view(torch.int8).to(torch.float32)
    d = (_float16_at(grouped, 208) * scales).unsqueeze(-1)  # [..., 16, 1]
    return d * quants.reshape(*leading, 16, 16).to(torch.float32)


_DEQUANTIZERS = {
    Q4_0: _dequantize_q4_0,
    Q4_1: _dequantize_q4_1,
    Q5_0: _dequantize_q5_0,
    Q5_1: _dequantize_q5_1,
    Q8_0: _dequantize_q8_0,
    Q4_K: _dequantize_q4_k,
    Q5_K: _dequantize_q5_k,
    Q6_K: _dequantize_q6_k,
}


def _float16_at(grouped: torch.Tensor, offset: int) -> torch.Tensor:
    """The float16 at byte ``offset`` of every block, as float32 ``[..., 1]``."""
    return grouped[..., offset : offset + 2].contiguous().view(torch.float16).to(torch.float32)


def _nibbles(quant_bytes: torch.Tensor) -> torch.Tensor:
    """The 32 4-bit values of each block's 16 bytes, in value order: low nibbles, then high nibbles."""
    return torch.cat([quant_bytes & 0x0F, quant_bytes >> 4], dim=-1)


def _halves_per_32_bytes(nibble_bytes: torch.Tensor) -> torch.Tensor:
    """Q4_K/Q5_K's 256 4-bit values ``[..., 8 sub-blocks, 32]`` from 128 bytes: each 32 bytes hold one
    sub-block in their low nibbles and the next in their high nibbles."""
    chunks = nibble_bytes.reshape(*nibble_bytes.shape[:-1], 4, 1, 32)
    return torch.cat([chunks & 0x0F, chunks >> 4], dim=-2).reshape(*nibble_bytes.shape[:-1], 8, 32)

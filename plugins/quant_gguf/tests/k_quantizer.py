"""A numpy quantizer to ggml's Q4_K, Q5_K and Q6_K blocks, and a GGUF re-quantizer built on it.

gguf-py (0.19) dequantizes the K-quants but cannot write them, so the tests make their K-quant files
with this. It picks scales by each sub-block's range (llama.cpp searches for better ones; the layout
is what matters here), and ``test_k_quantizer_round_trips_through_gguf`` checks it through
gguf-py's own dequantizer. As a script it writes the tests' Q4_K_M-style file of the default model,
for benchmarks:

    .venv/bin/python plugins/quant_gguf/tests/k_quantizer.py bench_out/default-q4_k_m-style.gguf
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

import gguf

Q4_K, Q5_K, Q6_K = (gguf.GGMLQuantizationType(type_id) for type_id in (12, 13, 14))
SUPER_BLOCK = 256


def quantize_k(weights: np.ndarray, quant_type: gguf.GGMLQuantizationType) -> np.ndarray:
    """uint8 blocks ``[rows, (columns // 256) * bytes_per_block]`` of float32 ``weights [rows, columns]``."""
    rows, columns = weights.shape
    if columns % SUPER_BLOCK:
        raise ValueError(f"{quant_type.name} needs rows of a multiple of {SUPER_BLOCK} values, got {columns}")
    super_blocks = weights.astype(np.float32).reshape(-1, SUPER_BLOCK)
    if quant_type == Q6_K:
        packed = _quantize_q6_k(super_blocks)
    elif quant_type in (Q4_K, Q5_K):
        packed = _quantize_q4_k_q5_k(super_blocks, fifth_bit=quant_type == Q5_K)
    else:
        raise ValueError(f"quantize_k writes Q4_K, Q5_K or Q6_K, not {quant_type.name}")
    return packed.reshape(rows, -1)


def quantize(weights: np.ndarray, quant_type: gguf.GGMLQuantizationType) -> np.ndarray:
    """``quantize_k`` for the K-quants, gguf-py's quantizer for the types it writes."""
    if quant_type in (Q4_K, Q5_K, Q6_K):
        return quantize_k(weights, quant_type)
    return gguf.quants.quantize(weights, quant_type)


def _quantize_q4_k_q5_k(super_blocks: np.ndarray, fifth_bit: bool) -> np.ndarray:
    # value = (d * scale_j) * q - dmin * min_j, q in [0, 2^bits - 1], 6-bit scale_j and min_j per sub-block j.
    max_quant = 31 if fifth_bit else 15
    sub_blocks = super_blocks.reshape(-1, 8, 32)
    lowest = np.minimum(sub_blocks.min(axis=-1), 0)
    sub_scales = (sub_blocks.max(axis=-1) - lowest) / max_quant
    d = _float16(sub_scales.max(axis=-1) / 63)
    d_min = _float16(-lowest.min(axis=-1) / 63)
    scales = _divide_or_zero(sub_scales, d[:, None], 0, 63)
    minimums = _divide_or_zero(-lowest, d_min[:, None], 0, 63)
    step = d.astype(np.float32)[:, None] * scales
    offset = d_min.astype(np.float32)[:, None] * minimums
    quants = _divide_or_zero(sub_blocks + offset[..., None], step[..., None], 0, max_quant)

    scales, minimums = scales.astype(np.uint8), minimums.astype(np.uint8)
    packed_scales = np.concatenate(
        [
            (scales[:, :4] & 0x3F) | ((scales[:, 4:] >> 4) << 6),
            (minimums[:, :4] & 0x3F) | ((minimums[:, 4:] >> 4) << 6),
            (scales[:, 4:] & 0x0F) | ((minimums[:, 4:] & 0x0F) << 4),
        ],
        axis=-1,
    )
    low = quants & 0x0F  # [n, 8, 32]: sub-blocks 2i and 2i + 1 share 32 bytes, low and high nibbles
    nibbles = (low[:, 0::2] | (low[:, 1::2] << 4)).reshape(-1, 128)
    parts = [d.view(np.uint8).reshape(-1, 2), d_min.view(np.uint8).reshape(-1, 2), packed_scales]
    if fifth_bit:
        parts.append(np.bitwise_or.reduce((quants >> 4) << np.arange(8, dtype=np.uint8)[:, None], axis=1))
    return np.concatenate(parts + [nibbles], axis=-1)


def _quantize_q6_k(super_blocks: np.ndarray) -> np.ndarray:
    # value = (d * scale_j) * (q - 32), q in [0, 63], int8 scale_j per 16 values.
    sub_blocks = super_blocks.reshape(-1, 16, 16)
    sub_scales = np.abs(sub_blocks).max(axis=-1) / 31
    d = _float16(sub_scales.max(axis=-1) / 127)
    scales = _divide_or_zero(sub_scales, d[:, None], 0, 127)
    step = (d.astype(np.float32)[:, None] * scales)[..., None]
    quants = (_divide_or_zero(sub_blocks, step, -32, 31).astype(np.int16) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)

    # Each half of 128 values: value 32p + i is nibble p // 2 of byte 32 (p % 2) + i, and bits 2p, 2p + 1
    # of high byte i.
    low, high = quants & 0x0F, quants >> 4
    nibbles = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=-1)
    high_bytes = np.bitwise_or.reduce(high << np.array([0, 2, 4, 6], dtype=np.uint8)[:, None], axis=2)
    return np.concatenate(
        [nibbles.reshape(-1, 128), high_bytes.reshape(-1, 64), scales.astype(np.int8).view(np.uint8),
         d.view(np.uint8).reshape(-1, 2)],
        axis=-1,
    )


def _float16(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16)


def _divide_or_zero(values: np.ndarray, divisor: np.ndarray, low: int, high: int) -> np.ndarray:
    """round(values / divisor) clipped to [low, high] as uint8 (int8 range kept via int16), 0 where divisor is 0."""
    divisor = np.broadcast_to(divisor, values.shape).astype(np.float32)
    quotient = np.divide(values, divisor, out=np.zeros(values.shape, np.float32), where=divisor != 0)
    rounded = np.clip(np.rint(quotient), low, high)
    return rounded.astype(np.int16 if low < 0 else np.uint8)


def requantize_gguf(source: Path, destination: Path, choose_type: Callable[[str, tuple[int, int]], object]) -> None:
    """Copy the GGUF file ``source`` to ``destination`` with some tensors re-quantized.

    ``choose_type(name, shape)`` gets each 2-D tensor's name and (rows, columns) shape and returns the
    ggml type to store it in (a K-quant, or a type gguf-py writes), or None to copy it unchanged.
    """
    reader = gguf.GGUFReader(source)
    writer = _writer_with_metadata(reader, destination)
    for tensor in reader.tensors:
        shape = tuple(int(size) for size in reversed(tensor.shape))  # ggml lists dimensions innermost first
        quant_type = choose_type(tensor.name, shape) if len(shape) == 2 else None
        if quant_type is None:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
        else:
            quant_type = gguf.GGMLQuantizationType(quant_type)
            weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
            writer.add_tensor(tensor.name, quantize(weights, quant_type), raw_dtype=quant_type)
    _finish(writer)


def write_random_llama_gguf(
    tokenizer_source: Path,
    destination: Path,
    types: dict[str, int],
    hidden_size: int = 256,
    intermediate_size: int = 512,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
) -> None:
    """A llama GGUF with random weights, every linear tensor a K-quant, and the tokenizer (and so the
    vocabulary) of the llama GGUF ``tokenizer_source``; the output projection is tied to the embedding.

    ``types`` maps the tensor kinds ``attn_q``, ``attn_k``, ``attn_v``, ``attn_output``, ``ffn_gate``,
    ``ffn_up``, ``ffn_down`` and ``token_embd`` to their K-quant type (a ggml type id).
    """
    reader = gguf.GGUFReader(tokenizer_source)
    vocab_size = len(reader.fields["tokenizer.ggml.tokens"].data)
    head_dim = hidden_size // num_heads
    writer = _writer_with_metadata(
        reader,
        destination,
        overrides={
            "llama.block_count": num_layers,
            "llama.embedding_length": hidden_size,
            "llama.feed_forward_length": intermediate_size,
            "llama.attention.head_count": num_heads,
            "llama.attention.head_count_kv": num_kv_heads,
            "llama.rope.dimension_count": head_dim,
            "llama.vocab_size": vocab_size,
        },
    )
    rng = np.random.default_rng(seed)

    def add_linear(name: str, kind: str, rows: int, columns: int) -> None:
        weights = (rng.standard_normal((rows, columns)) / np.sqrt(columns)).astype(np.float32)
        quant_type = gguf.GGMLQuantizationType(types[kind])
        writer.add_tensor(name, quantize_k(weights, quant_type), raw_dtype=quant_type)

    def add_norm(name: str) -> None:
        writer.add_tensor(name, rng.uniform(0.8, 1.2, size=hidden_size).astype(np.float32))

    add_linear("token_embd.weight", "token_embd", vocab_size, hidden_size)
    for layer in range(num_layers):
        prefix = f"blk.{layer}"
        add_norm(f"{prefix}.attn_norm.weight")
        add_linear(f"{prefix}.attn_q.weight", "attn_q", num_heads * head_dim, hidden_size)
        add_linear(f"{prefix}.attn_k.weight", "attn_k", num_kv_heads * head_dim, hidden_size)
        add_linear(f"{prefix}.attn_v.weight", "attn_v", num_kv_heads * head_dim, hidden_size)
        add_linear(f"{prefix}.attn_output.weight", "attn_output", hidden_size, num_heads * head_dim)
        add_norm(f"{prefix}.ffn_norm.weight")
        add_linear(f"{prefix}.ffn_gate.weight", "ffn_gate", intermediate_size, hidden_size)
        add_linear(f"{prefix}.ffn_up.weight", "ffn_up", intermediate_size, hidden_size)
        add_linear(f"{prefix}.ffn_down.weight", "ffn_down", hidden_size, intermediate_size)
    add_norm("output_norm.weight")
    _finish(writer)


def _writer_with_metadata(reader, destination: Path, overrides: dict | None = None) -> gguf.GGUFWriter:
    """A writer for ``destination`` holding ``reader``'s metadata, with ``overrides`` replacing values."""
    overrides = overrides or {}
    architecture = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(destination, architecture)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the writer adds these itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, overrides.get(field.name, field.contents()), value_type, sub_type=sub_type)
    return writer


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def q4_k_m_style_type(name: str, shape: tuple[int, int]) -> gguf.GGMLQuantizationType | None:
    """The type of the default model's tensor ``name`` in a file laid out like llama.cpp's Q4_K_M (None:
    unchanged): K-quants for the down projections, whose rows fit 256-value super-blocks (all three
    K-quants, in turn), and for the 576-wide projections the 32-value fallbacks, Q5_0, with Q8_0 for
    every third v projection and Q5_1 for every other gate/up pair."""
    if not name.startswith("blk."):
        return None
    layer, kind = int(name.split(".")[1]), name.split(".")[2]
    if kind == "ffn_down":
        return (Q6_K, Q5_K, Q4_K)[layer % 3]
    if kind == "attn_v":
        return gguf.GGMLQuantizationType.Q8_0 if layer % 3 == 0 else gguf.GGMLQuantizationType.Q5_0
    if kind in ("ffn_gate", "ffn_up"):
        return gguf.GGMLQuantizationType.Q5_1 if layer % 2 else gguf.GGMLQuantizationType.Q5_0
    return gguf.GGMLQuantizationType.Q5_0


def main() -> None:
    import argparse

    from pagedllm_core.model.source import default_model_source

    parser = argparse.ArgumentParser(description="write the default model re-quantized like llama.cpp's Q4_K_M")
    parser.add_argument("destination", type=Path, help="the GGUF file to write")
    source = default_model_source()
    requantize_gguf(source.directory / source.gguf_file, parser.parse_args().destination, q4_k_m_style_type)


if __name__ == "__main__":
    main()

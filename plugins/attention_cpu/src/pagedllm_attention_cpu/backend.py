"""The ``cpu`` attention backend: compiled kernels for decode rows and for prompt chunks."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass

import torch

from pagedllm_attention_cpu.kernels import load_kernels
from pagedllm_core.attention.backend import AttentionBackend, AttentionSpec
from pagedllm_core.attention.kv_quant import FP8_DTYPES
from pagedllm_core.attention.metadata import AttentionMetadata

SUPPORTED_KV_CACHE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, *FP8_DTYPES)


# A sequence with at most this many new tokens (a decode step's one, a speculative verification's few) runs them
# as decode rows: each token attends to the cache up to its own position, read in place by the decode kernel.
MAX_DECODE_ROWS_PER_SEQUENCE = 16


@dataclass
class DecodeRows:
    """The step's tokens that run as decode rows, as the kernel takes them."""

    token_index: torch.Tensor  # [num_rows] int64, each row's token in the step
    block_tables: torch.Tensor  # [num_rows, max_blocks] int32, its sequence's blocks
    seq_lens: torch.Tensor  # [num_rows] int32, the positions it sees: up to its own, included


@dataclass
class PromptChunks:
    """The step's sequences with more new tokens (prompts or chunks of them), as the chunk kernel takes them."""

    query_start: torch.Tensor  # [num_chunks] int64, each chunk's first row in the step
    query_lens: torch.Tensor  # [num_chunks] int64, its rows
    block_tables: torch.Tensor  # [num_chunks, max_blocks] int32, its sequence's blocks
    seq_lens: torch.Tensor  # [num_chunks] int32, its sequence's length, the chunk included


@dataclass
class StepPlan:
    decode: DecodeRows | None
    chunks: PromptChunks | None


class CpuAttentionBackend(AttentionBackend):
    """Decode rows go to a C++ kernel that reads keys and values in place from the paged cache,
    parallel over (row, KV head): every sequence's one new token, and each of the new tokens of a
    sequence with up to ``MAX_DECODE_ROWS_PER_SEQUENCE`` of them (a speculative verification), attending
    up to its own position. Longer prompt chunks go to a second C++ kernel, causal flash attention
    that reads the chunk's context, its own new keys and values included, in place from the cache,
    parallel over (chunk, KV head, 32 positions). Nothing is padded to the step's longest sequence,
    and nothing is gathered. An fp8 cache is read with its layer's scales, so a prompt attends to its
    keys and values exactly as later steps will read them back.
    """

    @classmethod
    def unsupported_reasons(cls, spec: AttentionSpec) -> list[str]:
        reasons = []
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None:
            reasons.append(f"no C++ compiler ({compiler}) to build the kernel; install g++ or set CXX")
        if importlib.util.find_spec("ninja") is None:
            reasons.append("ninja is not installed (pip install ninja)")
        if spec.device.type != "cpu":
            reasons.append(f"device {spec.device.type} unsupported (cpu only)")
        if spec.kv_cache_dtype not in SUPPORTED_KV_CACHE_DTYPES:
            allowed = ", ".join(str(dtype) for dtype in SUPPORTED_KV_CACHE_DTYPES)
            reasons.append(f"KV cache dtype {spec.kv_cache_dtype} unsupported ({allowed} are)")
        if spec.num_heads % spec.num_kv_heads:
            reasons.append(f"{spec.num_heads} query heads do not divide into {spec.num_kv_heads} KV head groups")
        return reasons

    @classmethod
    def supported_kv_cache_dtypes(cls, model_dtype: torch.dtype) -> tuple[torch.dtype, ...]:
        return (model_dtype, *FP8_DTYPES)

    def __init__(self, spec: AttentionSpec):
        super().__init__(spec)
        self._kernels = load_kernels()

    def prepare(self, metadata: AttentionMetadata) -> None:
        # Decode rows and prompt chunks are both picked with tensor ops, with no loop over sequences.
        query_start = metadata.query_start_loc.long()
        if metadata.num_tokens == metadata.num_seqs and metadata.max_query_len == 1:  # one new token each
            decode = DecodeRows(query_start[:-1], metadata.block_tables.contiguous(), metadata.seq_lens.contiguous())
            metadata.backend_data = StepPlan(decode, None)
            return
        query_lens = query_start[1:] - query_start[:-1]
        is_decode = query_lens <= MAX_DECODE_ROWS_PER_SEQUENCE
        decode = _decode_rows(metadata, query_start, query_lens, is_decode) if bool(is_decode.any()) else None
        chunk = (~is_decode).nonzero().squeeze(-1)
        chunks = None
        if len(chunk):
            chunks = PromptChunks(query_start[chunk], query_lens[chunk], metadata.block_tables[chunk].contiguous(),
                                  metadata.seq_lens[chunk].contiguous())
        metadata.backend_data = StepPlan(decode, chunks)

    def native_decode_op(self) -> str:
        return f"{self._kernels.__name__}::decode_attention"

    def native_step_arguments(self, metadata: AttentionMetadata) -> tuple | None:
        plan: StepPlan = metadata.backend_data
        if plan.decode is None or plan.chunks is not None:
            return None
        decode = plan.decode
        return metadata.slot_mapping, decode.token_index, decode.block_tables, decode.seq_lens, self.spec.scale

    def forward(self, query, key, value, kv_cache, metadata, kv_scales=None):
        write_kv_cache(key, value, kv_cache, metadata.slot_mapping, kv_scales)  # by name: `bench step --profile` times it
        k_scale, v_scale = _scale_values(kv_scales)
        plan: StepPlan = metadata.backend_data
        output = torch.empty(query.shape, dtype=query.dtype)
        if plan.decode is not None:
            decode = plan.decode
            self._kernels.paged_decode(
                output, query, kv_cache[0], kv_cache[1], decode.token_index, decode.block_tables, decode.seq_lens,
                self.spec.scale, k_scale, v_scale,
            )
        if plan.chunks is not None:
            chunks = plan.chunks
            self._kernels.chunk_attention(
                output, query, kv_cache[0], kv_cache[1], chunks.query_start, chunks.query_lens, chunks.block_tables,
                chunks.seq_lens, self.spec.scale, k_scale, v_scale,
            )
        return output


def _decode_rows(metadata: AttentionMetadata, query_start, query_lens, is_decode) -> DecodeRows:
    """Every new token of the sequences ``is_decode`` picks, as a decode row seeing the positions up to its own."""
    sequence_of_token = torch.arange(len(query_lens)).repeat_interleave(query_lens)
    token_index = is_decode[sequence_of_token].nonzero().squeeze(-1)
    sequence = sequence_of_token[token_index]
    # Token t of a sequence whose new tokens end at row e sits at position seq_len - (e - t).
    seq_lens = metadata.seq_lens[sequence] - (query_start[1:][sequence] - 1 - token_index).to(torch.int32)
    return DecodeRows(token_index, metadata.block_tables[sequence].contiguous(), seq_lens.contiguous())


def write_kv_cache(key, value, kv_cache, slot_mapping, kv_scales=None) -> None:
    """Store a step's new keys and values in their slots with one C++ call (the strided slices of a fused
    projection as they are): copied into a cache in the model's dtype, quantized into an fp8 one with the
    layer's ``kv_scales``, to the same bytes as the reference's quantize-and-copy."""
    load_kernels().write_kv_cache(key, value, kv_cache[0], kv_cache[1], slot_mapping, *_scale_values(kv_scales))


def _scale_values(kv_scales) -> tuple[float, float]:
    """A layer's fp8 key and value scales as the kernels take them (1.0 each for a cache in the model's dtype)."""
    return (1.0, 1.0) if kv_scales is None else (float(kv_scales[0]), float(kv_scales[1]))

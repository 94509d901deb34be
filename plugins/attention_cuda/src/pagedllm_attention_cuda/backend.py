"""The ``cuda`` attention backend: hand-written CUDA kernels over the core's paged KV cache layout."""

from __future__ import annotations

import importlib.util

import torch

from pagedllm_attention_cuda.decode_plan import plan_decode_partitions
from pagedllm_core.attention.backend import AttentionBackend, AttentionSpec
from pagedllm_core.attention.metadata import AttentionMetadata

SUPPORTED_HEAD_SIZES = (64, 80, 96, 128, 256)  # kSupportedHeadSizes in csrc/pagedllm_cuda.h
SUPPORTED_KV_CACHE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Decode partitions are cut shorter until a step has this many thread blocks per multiprocessor.
DECODE_BLOCKS_PER_SM = 2


def _cuda_home() -> str | None:
    # torch sets CUDA_HOME only in its CUDA builds; importing cpp_extension is deferred to here.
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME


class CudaAttentionBackend(AttentionBackend):
    """Writes new K/V with ``reshape_and_cache``, then runs paged decode or prefill attention.

    Decode-only steps (``max_query_len == 1``) take the decode kernel, its context cut into
    partitions (PagedAttention V2) when a step has too few (sequence, KV head) pairs to fill the GPU
    or a context is longer than one partition; any other step, including a mix of prefill and
    decode rows, takes the prefill kernel. The kernels are compiled for the visible GPU the first
    time a backend is built on a machine.
    """

    # The cache write skips slot -1, and neither prepare nor forward waits on the device.
    supports_cuda_graphs = True

    @classmethod
    def unsupported_reasons(cls, spec: AttentionSpec) -> list[str]:
        reasons = []
        if spec.device.type != "cuda":
            reasons.append(f"device {spec.device.type} unsupported (cuda only)")
        elif torch.version.cuda is None:
            reasons.append(f"this torch ({torch.__version__}) is built without CUDA")
        elif not torch.cuda.is_available():
            reasons.append("no CUDA device is visible")
        else:
            if _cuda_home() is None:
                reasons.append("no CUDA toolkit (nvcc) to build the kernels; install it or set CUDA_HOME")
            if importlib.util.find_spec("ninja") is None:
                reasons.append("ninja is not installed (pip install ninja)")
            if spec.kv_cache_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                reasons.append("KV cache dtype torch.bfloat16 needs compute capability 8.0+")
        if spec.head_size not in SUPPORTED_HEAD_SIZES:
            allowed = ", ".join(map(str, SUPPORTED_HEAD_SIZES))
            reasons.append(f"head size {spec.head_size} unsupported ({allowed} are)")
        if spec.kv_cache_dtype not in SUPPORTED_KV_CACHE_DTYPES:
            allowed = ", ".join(str(dtype) for dtype in SUPPORTED_KV_CACHE_DTYPES)
            reasons.append(f"KV cache dtype {spec.kv_cache_dtype} unsupported ({allowed} are)")
        elif spec.kv_cache_dtype != spec.model_dtype:
            reasons.append(
                f"KV cache dtype {spec.kv_cache_dtype} differs from the model's {spec.model_dtype} "
                "(the kernels keep keys and values in the model's dtype)"
            )
        if spec.num_heads % spec.num_kv_heads:
            reasons.append(f"{spec.num_heads} query heads do not divide into {spec.num_kv_heads} KV head groups")
        return reasons

    def __init__(self, spec: AttentionSpec):
        super().__init__(spec)
        from pagedllm_attention_cuda.kernels import load_kernels

        self._kernels = load_kernels()
        num_sms = torch.cuda.get_device_properties(spec.device).multi_processor_count
        self._num_target_decode_blocks = DECODE_BLOCKS_PER_SM * num_sms

    def prepare(self, metadata: AttentionMetadata) -> None:
        if metadata.max_query_len == 1:
            metadata.backend_data = plan_decode_partitions(
                metadata.num_seqs,
                self.spec.num_heads,
                self.spec.num_kv_heads,
                metadata.max_seq_len,
                self._num_target_decode_blocks,
            )

    def forward(self, query, key, value, kv_cache, metadata):
        self._kernels.reshape_and_cache(key, value, kv_cache, metadata.slot_mapping)
        if metadata.max_query_len == 1:
            partitions = metadata.backend_data
            return self._kernels.paged_decode(
                query,
                kv_cache,
                metadata.block_tables,
                metadata.seq_lens,
                self.spec.scale,
                partitions.partition_size,
                partitions.num_partitions,
            )
        return self._kernels.paged_prefill(
            query,
            kv_cache,
            metadata.block_tables,
            metadata.seq_lens,
            metadata.query_start_loc,
            self.spec.scale,
            metadata.max_query_len,
        )

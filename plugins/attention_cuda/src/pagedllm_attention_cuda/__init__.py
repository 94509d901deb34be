"""pagedllm plugin: hand-written CUDA paged attention kernels, registered as the attention backend ``cuda``.

The backend is registered by its ``"module:Class"`` path, so loading this plugin imports neither the
kernels nor torch's extension builder; the kernels are compiled when ``attention_backend="cuda"`` is
chosen (or ``auto`` picks it on a CUDA device).
"""

from pagedllm_core.hookspecs import hookimpl


@hookimpl
def register_attention_backends(register):
    register(
        "cuda",
        "pagedllm_attention_cuda.backend:CudaAttentionBackend",
        "CUDA paged attention: decode (PagedAttention V2 partitions + reduce), FA-style prefill, reshape_and_cache",
        auto_priority={"cuda": 20},
    )

"""pagedllm plugin: Triton paged attention kernels, registered as the attention backend ``triton``.

The backend is registered by its ``"module:Class"`` path, so loading this plugin does not import
triton; that happens only when ``attention_backend="triton"`` is chosen.
"""

from pagedllm_core.hookspecs import hookimpl


@hookimpl
def register_attention_backends(register):
    register(
        "triton",
        "pagedllm_attention_triton.backend:TritonAttentionBackend",
        "Triton paged attention: decode (split-K), prefill, cache write (GPU; CPU via TRITON_INTERPRET=1)",
        auto_priority={"cuda": 10},
    )

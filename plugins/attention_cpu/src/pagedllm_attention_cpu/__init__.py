"""pagedllm plugin: a compiled CPU paged attention backend, registered as ``cpu``.

Registered by its ``"module:Class"`` path; the C++ kernel is compiled (once per machine, then
cached by torch) only when the backend is chosen.
"""

from pagedllm_core.hookspecs import hookimpl


@hookimpl
def register_attention_backends(register):
    register(
        "cpu",
        "pagedllm_attention_cpu.backend:CpuAttentionBackend",
        "compiled C++ decode kernel reading the paged cache in place + per-sequence SDPA for prompts (CPU)",
        auto_priority={"cpu": 20},
    )

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
        "compiled C++ kernels reading the paged cache in place, for decode rows and prompt chunks (CPU)",
        auto_priority={"cpu": 20},
    )

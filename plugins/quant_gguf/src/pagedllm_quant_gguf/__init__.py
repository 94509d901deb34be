"""pagedllm plugin: linear layers of GGUF checkpoints run from their quantized blocks, registered as ``gguf``.

Registered by its ``"module:Class"`` path; the C++ kernel is compiled (once per machine, then
cached by torch) only when the method is chosen.
"""

from pagedllm_core.hookspecs import hookimpl


@hookimpl
def register_quantizers(register):
    register(
        "gguf",
        "pagedllm_quant_gguf.method:GGUFQuantization",
        "GGUF Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K blocks read in place by a C++ kernel for small steps "
        "(CPU, float32)",
        auto_priority={"gguf": 10},
    )

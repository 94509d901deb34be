"""pagedllm plugin: AWQ 4-bit checkpoints run from their packed weights, registered as ``awq``.

Registered by its ``"module:Class"`` path; the C++ kernel is compiled (once per machine, then cached by
torch) and triton imported only when the method is chosen.
"""

from pagedllm_core.hookspecs import hookimpl


@hookimpl
def register_quantizers(register):
    register(
        "awq",
        "pagedllm_quant_awq.method:AWQQuantization",
        "AWQ 4-bit GEMM checkpoints (AutoAWQ / vLLM layout) run from their packed weights: a C++ kernel on the "
        "CPU, Triton on a GPU",
        auto_priority={"awq": 10},
    )

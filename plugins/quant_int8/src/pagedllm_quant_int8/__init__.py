"""pagedllm plugin: W8A8 int8 linear layers (compressed-tensors checkpoints), registered as ``compressed-tensors``.

Registered by its ``"module:Class"`` path, so nothing is imported until the method is chosen.
"""

from pagedllm_core.hookspecs import hookimpl


@hookimpl
def register_quantizers(register):
    register(
        "compressed-tensors",
        "pagedllm_quant_int8.method:CompressedTensorsW8A8",
        "compressed-tensors W8A8 int8: per-channel int8 weights, dynamic per-token int8 activations, "
        "torch's int8 matmul (CPU)",
        auto_priority={"compressed-tensors": 10},
    )

"""Compile the AWQ Triton kernel for an H100 (sm_90) without a GPU: run as a script, outside the interpreter.

The interpreter runs kernels as numpy and misses what only the compiler rejects (dot shapes and dtypes,
constexpr misuse). Triton's wheel bundles LLVM and ptxas, so compiling ahead of time needs no device.
"""

from __future__ import annotations

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pagedllm_quant_awq.triton_gemm import BLOCK_K, BLOCK_M, BLOCK_N, awq_gemm_kernel

HOPPER = GPUTarget("cuda", 90, 32)


def compile_for(x_type: str) -> None:
    pointers = {"x_ptr": x_type, "qweight_ptr": "*i32", "qzeros_ptr": "*i32", "scales_ptr": "*fp16",
                "bias_ptr": x_type, "out_ptr": x_type}
    constants = {"HAS_BIAS": True, "IEEE_FLOAT32": x_type == "*fp32", "BLOCK_M": BLOCK_M, "BLOCK_N": BLOCK_N,
                 "BLOCK_K": BLOCK_K}
    signature, constexprs = {}, {}
    for index, name in enumerate(awq_gemm_kernel.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            constexprs[(index,)] = constants[name]
        else:
            signature[name] = pointers.get(name, "i32")
    triton.compile(ASTSource(awq_gemm_kernel, signature, constexprs), target=HOPPER)
    print(f"compiled awq_gemm_kernel ({x_type}) for sm_90")


if __name__ == "__main__":
    for x_type in ("*fp32", "*fp16", "*bf16"):
        compile_for(x_type)

"""Compile every kernel for an H100 (sm_90) without a GPU: run as a script, outside the interpreter.

The interpreter runs kernels as numpy and misses what only the compiler rejects (dot shapes,
constexpr misuse, unsupported control flow). Triton's wheel bundles LLVM and ptxas, so compiling
ahead of time to a cubin needs no device. Arguments are specialised as a launch would be: unit
strides become constants and pointers and other strides are assumed 16-divisible.
"""

from __future__ import annotations

import triton
import triton.language as tl
from pagedllm_attention_triton import cache_write, decode, prefill
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

HOPPER = GPUTarget("cuda", 90, 32)
FLOAT_ARGUMENTS = {"scale_log2": "fp32"}


def compile_kernel(kernel, pointer_types: dict[str, str], constants: dict[str, object]) -> None:
    signature, constexprs, attributes = {}, {}, {}
    for index, name in enumerate(kernel.arg_names):
        if name in constants or name.endswith("_dim"):
            signature[name] = "constexpr"
            constexprs[(index,)] = constants.get(name, 1)
        elif name in pointer_types:
            signature[name] = pointer_types[name]
            attributes[(index,)] = [["tt.divisibility", 16]]
        elif name in FLOAT_ARGUMENTS:
            signature[name] = FLOAT_ARGUMENTS[name]
        else:
            signature[name] = "i32"
            if name.startswith("stride"):
                attributes[(index,)] = [["tt.divisibility", 16]]
    triton.compile(ASTSource(kernel, signature, constexprs, attributes), target=HOPPER)
    print(f"compiled {kernel.__name__} for sm_90")


def main() -> None:
    attention_pointers = {
        "output_ptr": "*bf16",
        "query_ptr": "*bf16",
        "key_cache_ptr": "*bf16",
        "value_cache_ptr": "*bf16",
        "block_tables_ptr": "*i32",
        "seq_lens_ptr": "*i32",
        "query_start_loc_ptr": "*i32",
        "partial_output_ptr": "*fp32",
        "partial_max_ptr": "*fp32",
        "partial_sum_ptr": "*fp32",
        "k_scale_ptr": "*fp32",
        "v_scale_ptr": "*fp32",
    }
    # Head size 80 exercises the padded tile; a query group of 4 the GQA rows.
    tiles = dict(HEAD_SIZE=80, HEAD_PAD=128, KV_BLOCK_SIZE=16, DOT_DTYPE=tl.bfloat16, DOT_PRECISION="tf32")
    compile_kernel(
        decode._decode_kernel,
        attention_pointers,
        dict(tiles, QUERY_GROUP_SIZE=4, ROWS=16, BLOCK_N=decode.BLOCK_N, WRITE_PARTIALS=True),
    )
    compile_kernel(decode._reduce_splits_kernel, attention_pointers, dict(HEAD_SIZE=80, HEAD_PAD=128, SPLITS_PAD=8))
    compile_kernel(
        prefill._prefill_kernel,
        attention_pointers,
        dict(tiles, QUERY_GROUP_SIZE=4, GROUP_PAD=4, BLOCK_M=16, BLOCK_N=prefill.BLOCK_N),
    )
    write_pointers = {
        "key_ptr": "*fp32",
        "value_ptr": "*fp32",
        "key_cache_ptr": "*bf16",
        "value_cache_ptr": "*bf16",
        "slot_mapping_ptr": "*i64",
        "k_scale_ptr": "*fp32",
        "v_scale_ptr": "*fp32",
    }
    write_tiles = dict(HEAD_SIZE=80, HEADS_PAD=8, HEAD_PAD=128, KV_BLOCK_SIZE=16)
    compile_kernel(
        cache_write._write_kv_cache_kernel,
        write_pointers,
        dict(write_tiles, FP8_MAX=0.0, FP8_MANTISSA_BITS=0, FP8_MIN_EXPONENT=0),
    )
    # An FP8 (E4M3) cache: the write rounds and casts, the decode widens to float32.
    fp8_cache = {"key_cache_ptr": "*fp8e4nv", "value_cache_ptr": "*fp8e4nv"}
    compile_kernel(
        cache_write._write_kv_cache_kernel,
        dict(write_pointers, **fp8_cache),
        dict(write_tiles, FP8_MAX=448.0, FP8_MANTISSA_BITS=3, FP8_MIN_EXPONENT=-6),
    )
    compile_kernel(
        decode._decode_kernel,
        dict(attention_pointers, **fp8_cache),
        dict(tiles, DOT_DTYPE=tl.float32, DOT_PRECISION="ieee", QUERY_GROUP_SIZE=4, ROWS=16, BLOCK_N=decode.BLOCK_N,
             WRITE_PARTIALS=False),
    )


if __name__ == "__main__":
    main()

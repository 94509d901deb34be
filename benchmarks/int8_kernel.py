"""The W8A8 layer's product against oneDNN's int8 product alone and float32 ``F.linear``: microseconds per call.

The layer (``int8_linear``) quantizes the rows, runs oneDNN's product and scales the result; on a CPU
whose oneDNN kernels saturate in int16 (no VNNI, or ``ONEDNN_MAX_CPU_ISA=AVX2``) it runs the product on
twice the rows (docs/quantization.md, "CPUs without VNNI"). Weights stream from memory as in
benchmarks/gguf_kernel.py: distinct matrices per pass, the fastest pass counts.

    .venv/bin/python benchmarks/int8_kernel.py --rows 1,16,256 --threads 2
    ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/int8_kernel.py --rows 1,16,256 --threads 2
"""

from __future__ import annotations

import argparse

import torch

from gguf_kernel import microseconds_per_call
from pagedllm_core.bench.docs_section import cpu_name
from pagedllm_quant_int8.kernel import (
    ACTIVATION_ZERO_POINT,
    int8_linear,
    load_kernels,
    pack_weight,
    quantize_per_channel,
    weight_zero_points,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,16,256", help="rows of x per call (default: 1,16,256)")
    parser.add_argument("--in-features", type=int, default=576, help="K (default: 576, the default model's hidden size)")
    parser.add_argument("--out-features", type=int, default=1536, help="N (default: 1536, its intermediate size)")
    parser.add_argument("--num-matrices", type=int, default=30, help="distinct weights per pass (default: 30)")
    parser.add_argument("--num-passes", type=int, default=11, help="passes; the fastest counts (default: 11)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    K, N = args.in_features, args.out_features
    weights = [quantize_per_channel(torch.randn(N, K)) for _ in range(args.num_matrices)]
    packed = [(pack_weight(weight), scale, weight_zero_points(scale)) for weight, scale in weights]
    dense = [weight.float() * scale[:, None] for weight, scale in weights]

    saturates = load_kernels().product_saturates()
    print(f"W8A8 {K} -> {N}, {args.num_matrices} distinct matrices per pass, fastest of {args.num_passes} passes, "
          f"{torch.get_num_threads()} thread(s), {cpu_name()}; oneDNN's product saturates in int16: {saturates}.\n")
    print("| rows | oneDNN product alone (µs) | int8_linear (µs) | ratio | float32 F.linear (µs) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for m in (int(value) for value in args.rows.split(",")):
        x = torch.randn(m, K)
        shifted = torch.randint(0, 255, (m, K), dtype=torch.uint8)

        def product_alone():
            for weight, scale, zero_points in packed:
                torch.ops.onednn.qlinear_pointwise(shifted, 1.0, ACTIVATION_ZERO_POINT, weight, scale, zero_points,
                                                   None, 1.0, 0, torch.float32, "none", [None], "")

        alone = microseconds_per_call(product_alone, args.num_matrices, args.num_passes)
        layer = microseconds_per_call(lambda: [int8_linear(x, *piece[:2], None) for piece in packed],
                                      args.num_matrices, args.num_passes)
        dense_time = microseconds_per_call(lambda: [torch.nn.functional.linear(x, weight) for weight in dense],
                                           args.num_matrices, args.num_passes)
        print(f"| {m} | {alone:.0f} | {layer:.0f} | {layer / alone:.2f} | {dense_time:.0f} |")


if __name__ == "__main__":
    main()

"""The GGUF plugin's kernel against the dense float32 matmul, per block format: microseconds per call.

Each format runs with float32 activations and with activations rounded to int8 (the gguf option
``int8_activations``), one after the other in the same pass.

Each format runs one projection shape over as many distinct weight matrices as the default model has
layers (30), so the weights stream from memory as in a decode step instead of staying in cache; the
figure is the fastest of several passes (the least disturbed by other work on the machine) divided
by the number of matrices. Threads: torch's (``--threads`` to change).

    .venv/bin/python benchmarks/gguf_kernel.py --rows 1,4,16
"""

from __future__ import annotations

import argparse
import time

import torch

from pagedllm_core.bench.docs_section import cpu_name
from pagedllm_quant_gguf.blocks import BLOCK_FORMATS, dequantize
from pagedllm_quant_gguf.kernels import load_kernels
from pagedllm_quant_gguf.testing import random_blocks


# The kernel's two kinds of activations: the table's label -> its int8_activations argument.
ACTIVATIONS = {"float32 x": False, "int8 x": True}


def microseconds_per_call(run, num_matrices: int, num_passes: int) -> float:
    fastest = float("inf")
    for _ in range(num_passes):
        began = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - began)
    return fastest / num_matrices * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,4,16", help="rows of x per call (default: 1,4,16)")
    parser.add_argument("--in-features", type=int, default=1536,
                        help="K (default: 1536, the default model's down_proj)")
    parser.add_argument("--out-features", type=int, default=576, help="N (default: 576)")
    parser.add_argument("--num-matrices", type=int, default=30, help="distinct weights per pass (default: 30)")
    parser.add_argument("--num-passes", type=int, default=21, help="passes; the fastest counts (default: 21)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [int(value) for value in args.rows.split(",")]
    K, N = args.in_features, args.out_features
    gguf_linear = load_kernels().gguf_linear
    blocks = {
        quant_type: [random_blocks(N, K // fmt.values_per_block, quant_type, seed=i) for i in range(args.num_matrices)]
        for quant_type, fmt in BLOCK_FORMATS.items()
    }
    # The dense side multiplies by the dequantized weights of the first format: dense speed does not depend on them.
    first_type = next(iter(blocks))
    dense = [dequantize(matrix, first_type, K) for matrix in blocks[first_type]]

    print(f"gguf_linear against F.linear, {K} -> {N}, {args.num_matrices} distinct matrices per pass, fastest of "
          f"{args.num_passes} passes, {torch.get_num_threads()} thread(s), {cpu_name()}.\n")
    print("| format, activations | bits per weight | " + " | ".join(f"{m} row{'s' if m > 1 else ''} (µs)" for m in rows) + " |")
    print("| --- | ---: |" + " ---: |" * len(rows))
    table = {"dense float32": (32.0, [])}
    for fmt in BLOCK_FORMATS.values():
        for activations in ACTIVATIONS:
            table[f"{fmt.name}, {activations}"] = (8 * fmt.bytes_per_block / fmt.values_per_block, [])
    for m in rows:
        x = torch.randn(m, K)
        table["dense float32"][1].append(microseconds_per_call(
            lambda: [torch.nn.functional.linear(x, weight) for weight in dense], args.num_matrices, args.num_passes))
        for quant_type, matrices in blocks.items():
            for activations, int8 in ACTIVATIONS.items():
                run = lambda: [gguf_linear(x, matrix, quant_type, None, int8) for matrix in matrices]  # noqa: E731
                table[f"{BLOCK_FORMATS[quant_type].name}, {activations}"][1].append(
                    microseconds_per_call(run, args.num_matrices, args.num_passes))
    for name, (bits, timings) in table.items():
        print(f"| {name} | {bits:.2f} | " + " | ".join(f"{value:.0f}" for value in timings) + " |")


if __name__ == "__main__":
    main()

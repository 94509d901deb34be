"""The CPU LoRA op alone, for one decode step of the default model: milliseconds per step by distinct adapters.

The default model's 30 decoder blocks of wrapped layers (fused q/k/v, o, fused gate/up, down; SmolLM2-135M's
shapes) with their own slot tensors, so the slots stream from memory as in a real step; every slot holds a
random adapter. A decode step of ``--tokens`` sequences takes the adapters round-robin, the step planned once
as the manager does; only the LoRA op runs (the base layers are not called). The figure is the fastest of
several passes (the least disturbed by other work on the machine). Threads: torch's (``--threads``).

    .venv/bin/python benchmarks/lora_op.py --adapters 1,4,16
"""

from __future__ import annotations

import argparse
import time

import torch

from pagedllm_core.bench.docs_section import cpu_name
from pagedllm_lora.ops import torch_op
from pagedllm_lora.step_state import LoRAStepState

NUM_LAYERS = 30
# (in_features, output_sizes) of the wrapped layers of one SmolLM2-135M block
LAYERS = [(576, [576, 192, 192]), (576, [576]), (576, [1536, 1536]), (1536, [576])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--adapters", default="1,4,16", help="distinct adapters in the step")
    parser.add_argument("--tokens", type=int, default=16, help="sequences in the decode step")
    parser.add_argument("--rank", type=int, default=16, help="max_lora_rank (the slots' width)")
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    counts = [int(count) for count in args.adapters.split(",")]
    num_slots, rank = max(counts), args.rank
    layers = [
        (torch.randn(num_slots, len(sizes) * rank, in_features), torch.randn(num_slots, rank, sum(sizes)), sizes)
        for _ in range(NUM_LAYERS) for in_features, sizes in LAYERS
    ]
    inputs = {in_features: torch.randn(args.tokens, in_features) for in_features, _ in LAYERS}
    outputs = {sum(sizes): torch.randn(args.tokens, sum(sizes)) for _, sizes in LAYERS}
    slot_bytes = sum(a[0].nbytes + b[0].nbytes for a, b, _ in layers)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; {args.tokens} tokens per step, "
          f"slots of rank {rank}: {slot_bytes / 2**20:.1f} MiB each (float32)")
    state = LoRAStepState()
    for count in counts:
        state.update(torch.arange(args.tokens) % count, torch.device("cpu"), torch.float32)
        fastest = float("inf")
        for _ in range(args.passes):
            began = time.perf_counter()
            for lora_a, lora_b, sizes in layers:
                torch_op(outputs[lora_b.shape[2]], inputs[lora_a.shape[2]], lora_a, lora_b, sizes, state)
            fastest = min(fastest, time.perf_counter() - began)
        print(f"{count:>3} adapters: {fastest * 1e3:7.2f} ms per step")


if __name__ == "__main__":
    main()

"""Greedy agreement of an FP8 KV cache with the model-dtype cache: the share of 128 generated tokens
that equal the reference's at the same position, and where the first difference falls, per prompt set.

    .venv/bin/python benchmarks/fp8_kv_agreement.py [--model M] [--dtype float32] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import gc

from pagedllm_core.entrypoints.llm import LLM
from pagedllm_core.sampling_params import SamplingParams

PROMPTS = [
    "The capital of France is",
    "Write a short story about a robot who learns to paint.",
    "Explain how a paged KV cache works in an inference engine.",
    "def quicksort(items):",
    "List five fruits and their colours:",
    "Translate to French: The weather is nice today.",
    "What are the main causes of the French Revolution?",
    "Once upon a time, in a small village by the sea,",
]
CACHES = [("fp8_e4m3", True), ("fp8_e4m3", False), ("fp8_e5m2", True), ("fp8_e5m2", False)]


def generate(settings: dict, max_tokens: int) -> list[list[int]]:
    llm = LLM(**settings)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    del llm
    gc.collect()
    return [list(output.outputs[0].token_ids) for output in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--quantization", default="none")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    base = dict(model=args.model, dtype=args.dtype, quantization=args.quantization, max_model_len=1024,
                kv_cache_memory="512MiB")
    reference = generate(dict(base, kv_cache_dtype="auto"), args.max_tokens)
    print(f"greedy agreement with the {args.dtype} KV cache, {len(PROMPTS)} prompts x {args.max_tokens} tokens\n")
    print("| kv_cache_dtype | scales | tokens equal | first difference (median position) | prompts identical |")
    print("| --- | --- | ---: | ---: | ---: |")
    for kv_cache_dtype, calculate in CACHES:
        outputs = generate(dict(base, kv_cache_dtype=kv_cache_dtype, calculate_kv_scales=calculate), args.max_tokens)
        equal = sum(a == b for ref, out in zip(reference, outputs) for a, b in zip(ref, out))
        firsts = sorted(next((i for i, (a, b) in enumerate(zip(ref, out)) if a != b), len(ref))
                        for ref, out in zip(reference, outputs))
        identical = sum(ref == out for ref, out in zip(reference, outputs))
        scales = "calculated (first step)" if calculate else "1.0"
        print(f"| {kv_cache_dtype} | {scales} | {equal / (len(PROMPTS) * args.max_tokens):.1%} "
              f"| {firsts[len(firsts) // 2]} | {identical}/{len(PROMPTS)} |")


if __name__ == "__main__":
    main()

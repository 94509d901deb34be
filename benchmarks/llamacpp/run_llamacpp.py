"""W4 (single-stream latency) on llama.cpp through llama-cpp-python, for benchmarks/compare_llamacpp.py.

Runs in llama-cpp-python's own venv (benchmarks/llamacpp/.venv, made by setup.sh). The prompts are
token ids written by the comparison script (pagedllm's W4 prompts for the same GGUF), so both engines
get the same input; each is generated alone, greedy, for exactly ``--output-len`` tokens (EOS is not
a stop here: the loop counts tokens), timing the first token and the rest as ``pagedllm bench
latency`` does.

    benchmarks/llamacpp/.venv/bin/python benchmarks/llamacpp/run_llamacpp.py \\
        --model model.gguf --prompts prompts.json --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def time_stream(llm, prompt: list[int], output_len: int) -> dict:
    """One prompt alone: seconds to the first token, then decode tokens/s over the rest."""
    began = time.perf_counter()
    first_token_at = None
    num_output_tokens = 0
    # generate() evaluates the prompt, then yields one greedy token per forward pass; leaving the loop
    # after the last token skips the forward pass nobody needs, as pagedllm does.
    for _ in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        num_output_tokens += 1
        if first_token_at is None:
            first_token_at = time.perf_counter()
        if num_output_tokens == output_len:
            break
    finished_at = time.perf_counter()
    return {
        "ttft_s": first_token_at - began,
        "decode_tokens_per_s": (num_output_tokens - 1) / (finished_at - first_token_at),
        "num_output_tokens": num_output_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="W4 on llama-cpp-python; prints and writes JSON")
    parser.add_argument("--model", required=True, type=Path, help="the GGUF file")
    parser.add_argument("--prompts", required=True, type=Path, help="JSON list of token-id prompts")
    parser.add_argument("--output-len", type=int, default=128, help="tokens generated per prompt (default: 128)")
    parser.add_argument("--num-warmup", type=int, default=1, help="untimed prompts first (default: 1)")
    parser.add_argument("--threads", type=int, required=True, help="n_threads and n_threads_batch")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import llama_cpp

    prompts = json.loads(args.prompts.read_text())
    context = max(len(prompt) for prompt in prompts) + args.output_len
    started = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(args.model), n_ctx=context, n_batch=context, n_threads=args.threads,
        n_threads_batch=args.threads, seed=0, verbose=False,
    )
    startup_s = time.perf_counter() - started
    timings = [time_stream(llm, prompt, args.output_len) for prompt in prompts]
    timed = timings[args.num_warmup:]
    results = {
        "system": "llama.cpp",
        "llama_cpp_python_version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "threads": args.threads,
        "startup_s": startup_s,
        "num_warmup": args.num_warmup,
        "num_iters": len(timed),
        "ttft_median_s": statistics.median(t["ttft_s"] for t in timed),
        "decode_tokens_per_s_median": statistics.median(t["decode_tokens_per_s"] for t in timed),
        "iterations": timings,
    }
    print(f"[llama.cpp] W4: TTFT p50 {results['ttft_median_s'] * 1e3:.1f} ms, decode "
          f"{results['decode_tokens_per_s_median']:.1f} tok/s p50", flush=True)
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""W1 (offline throughput) and W4 (single-stream latency) on vLLM's CPU build, for the side-by-side comparison.

Runs in vLLM's own venv (benchmarks/vllm_cpu/.venv). The prompts are pagedllm's workloads, built by
``pagedllm_core/bench/workloads.py`` (loaded as a plain file: it needs only Python's ``random``) from
the model directory's tokenizer exactly as ``pagedllm bench throughput`` / ``bench latency`` build
them, and a fingerprint of the prompts goes into the results so the two sides can be checked to match.

    benchmarks/vllm_cpu/.venv/bin/python benchmarks/vllm_cpu/run_vllm.py \\
        --model benchmarks/vllm_cpu/model --dtype float32 --workloads W1,W4 --json out.json

With ``--first-token`` it runs no workload: it builds ``LLM()``, generates one token of one prompt and
records the wall-clock time (``time.time()``) right after it, so that the launching process can time
the start-up from before this process existed (``compare_vllm_cpu.py --startup``).

The thread binding, KV cache size and preloaded libraries are vLLM environment variables, set by
``benchmarks/compare_vllm_cpu.sh`` (see the README); this script records what it ran under.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Environment variables that change how vLLM runs on a CPU; recorded with the results.
RECORDED_ENV = (
    "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_KVCACHE_SPACE", "LD_PRELOAD",
    "OMP_NUM_THREADS", "VLLM_ENABLE_V1_MULTIPROCESSING",
)


def load_workloads():
    """pagedllm's workloads module, without importing the pagedllm package (whose dependencies this venv lacks)."""
    path = ROOT / "pagedllm_core" / "bench" / "workloads.py"
    spec = importlib.util.spec_from_file_location("pagedllm_workloads", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def prompts_fingerprint(prompts: list[list[int]]) -> str:
    """A short hash of the prompt token ids, equal on both sides when the prompts are."""
    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]


def run_w1(llm, workload) -> dict:
    """All requests at once through ``LLM.generate``, as vLLM's offline throughput benchmark does."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=workload.output_len, ignore_eos=True)
    _warm_up(llm)
    began = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": prompt} for prompt in workload.prompts], params, use_tqdm=False)
    elapsed = time.perf_counter() - began
    num_output_tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    return {
        "workload": workload.name,
        "num_requests": len(workload.prompts),
        "num_prompt_tokens": workload.num_prompt_tokens,
        "num_output_tokens": num_output_tokens,
        "elapsed_s": elapsed,
        "requests_per_s": len(workload.prompts) / elapsed,
        "output_tokens_per_s": num_output_tokens / elapsed,
        "total_tokens_per_s": (workload.num_prompt_tokens + num_output_tokens) / elapsed,
        "prompts_sha256": prompts_fingerprint(workload.prompts),
    }


def run_w4(llm, workload, num_warmup: int) -> dict:
    """Each prompt alone through the engine's step loop, timing its first token and the rest.

    ``LLM.generate`` returns only when a request is done, so this drives ``llm.llm_engine`` the way
    ``pagedllm bench latency`` drives its engine: add one request, step until it finishes.
    """
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=workload.output_len, ignore_eos=True)
    engine = llm.llm_engine
    timings = []
    for index, prompt in enumerate(workload.prompts):
        began = time.perf_counter()
        engine.add_request(f"latency-{index}", {"prompt_token_ids": prompt}, params)
        first_token_at = None
        num_output_tokens = 0
        while engine.has_unfinished_requests():
            for output in engine.step():
                num_output_tokens = len(output.outputs[0].token_ids)
                if first_token_at is None and num_output_tokens:
                    first_token_at = time.perf_counter()
        finished_at = time.perf_counter()
        timings.append({
            "ttft_s": first_token_at - began,
            "decode_tokens_per_s": (num_output_tokens - 1) / (finished_at - first_token_at),
            "num_output_tokens": num_output_tokens,
        })
    timed = timings[num_warmup:]
    return {
        "workload": workload.name,
        "num_warmup": num_warmup,
        "num_iters": len(timed),
        "ttft_mean_s": statistics.fmean(t["ttft_s"] for t in timed),
        "ttft_median_s": statistics.median(t["ttft_s"] for t in timed),
        "decode_tokens_per_s_mean": statistics.fmean(t["decode_tokens_per_s"] for t in timed),
        "decode_tokens_per_s_median": statistics.median(t["decode_tokens_per_s"] for t in timed),
        "iterations": timings,
        "prompts_sha256": prompts_fingerprint(workload.prompts),
    }


def _engine_settings(llm) -> dict:
    """The scheduler and cache settings vLLM chose, for the record."""
    config = llm.llm_engine.vllm_config
    return {
        "max_num_seqs": config.scheduler_config.max_num_seqs,
        "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens,
        "enable_prefix_caching": config.cache_config.enable_prefix_caching,
        "block_size": config.cache_config.block_size,
    }


def _warm_up(llm) -> None:
    """One short request, so that first-call costs stay out of the timing (as pagedllm's benchmark does)."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    llm.generate([{"prompt_token_ids": list(range(1, 17))}], params, use_tqdm=False)


def first_token_at(llm) -> float:
    """Generate one token of a short prompt (as ``pagedllm bench startup`` does); the wall-clock time after it."""
    from vllm import SamplingParams

    llm.generate(["Hello"], SamplingParams(max_tokens=1), use_tqdm=False)
    return time.time()


def main() -> None:
    parser = argparse.ArgumentParser(description="W1 and W4 on vLLM's CPU build; prints and writes JSON")
    parser.add_argument("--model", required=True, help="Hugging Face model directory (see convert_model.py)")
    parser.add_argument("--dtype", default="float32", help="vLLM --dtype (default: float32, as pagedllm's auto here)")
    parser.add_argument("--workloads", default="W1,W4", help="comma-separated: W1, W4 (default: both)")
    parser.add_argument("--num-prompts", type=int, default=200, help="W1 requests (default: 200)")
    parser.add_argument("--num-iters", type=int, default=5, help="W4 timed iterations (default: 5)")
    parser.add_argument("--num-warmup", type=int, default=1, help="W4 untimed iterations first (default: 1)")
    parser.add_argument("--workload-seed", type=int, default=0, help="seed of the prompts (default: 0)")
    parser.add_argument("--label", default="vLLM", help="name of this configuration in the results")
    parser.add_argument("--first-token", action="store_true",
                        help="no workloads: time to LLM()'s first token only (records first_token_at)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    names = [] if args.first_token else [name.strip().upper() for name in args.workloads.split(",") if name.strip()]
    unknown = sorted(set(names) - {"W1", "W4"})
    if unknown:
        parser.error(f"--workloads: unknown {unknown}; allowed: W1, W4")

    import torch
    import vllm
    from transformers import AutoTokenizer
    from vllm import LLM

    if names:
        workloads = load_workloads()
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        vocab_size, special_ids = len(tokenizer), tokenizer.all_special_ids
    started = time.perf_counter()
    llm = LLM(model=args.model, dtype=args.dtype, seed=0)
    startup_s = time.perf_counter() - started
    stamp = first_token_at(llm) if args.first_token else None
    results = {
        "system": args.label,
        "vllm_version": vllm.__version__,
        "torch_version": torch.__version__,
        "dtype": str(llm.llm_engine.model_config.dtype).removeprefix("torch."),
        "machine": platform.machine(),
        "num_cpus": os.cpu_count(),
        "env": {name: os.environ.get(name) for name in RECORDED_ENV},
        "startup_s": startup_s,
        **_engine_settings(llm),
    }
    if args.first_token:
        results["first_token_at"] = stamp
    if "W1" in names:
        workload = workloads.throughput_workload(vocab_size, special_ids, num_prompts=args.num_prompts,
                                                 seed=args.workload_seed)
        results["W1"] = run_w1(llm, workload)
        print(f"[{args.label}] W1: {results['W1']['num_requests']} requests in {results['W1']['elapsed_s']:.1f} s, "
              f"{results['W1']['output_tokens_per_s']:.1f} output tok/s", flush=True)
    if "W4" in names:
        workload = workloads.latency_workload(vocab_size, special_ids, seed=args.workload_seed,
                                              num_prompts=args.num_warmup + args.num_iters)
        results["W4"] = run_w4(llm, workload, args.num_warmup)
        print(f"[{args.label}] W4: TTFT p50 {results['W4']['ttft_median_s'] * 1e3:.1f} ms, decode "
              f"{results['W4']['decode_tokens_per_s_median']:.1f} tok/s p50", flush=True)
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

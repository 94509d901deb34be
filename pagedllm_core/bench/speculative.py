"""``pagedllm bench latency --speculative-config ...``: one stream with and without speculation.

Both engines run in this process on the same prompts, alternating prompt by prompt so that a load
change on a shared machine hits both alike. The report gives decode tokens/s of each, their ratio,
the acceptance rate and mean accepted length, and whether speculation produced exactly the tokens
plain greedy decoding did.
"""

from __future__ import annotations

import argparse

from pagedllm_core.bench.copy_workload import copy_workload
from pagedllm_core.bench.latency import time_stream_tokens
from pagedllm_core.bench.results import LatencyResult, StreamTiming
from pagedllm_core.bench.throughput import workload_for_engine
from pagedllm_core.bench.workloads import Workload, latency_workload
from pagedllm_core.entrypoints.engine_args import engine_settings_from_args
from pagedllm_core.spec_decode.stats import SpecDecodeStats


def build_workload(args: argparse.Namespace, engine) -> Workload:
    num_prompts = args.num_warmup + args.num_iters
    if args.workload == "copy":
        return copy_workload(engine.tokenizer, num_prompts, args.workload_seed, args.output_len)
    return workload_for_engine(
        engine, latency_workload, seed=args.workload_seed, num_prompts=num_prompts,
        input_len=args.input_len, output_len=args.output_len,
    )


def run_speculative_latency_bench(args: argparse.Namespace) -> str:
    """Plain and speculative engines side by side; returns the markdown report."""
    from pagedllm_core.config import EngineConfig
    from pagedllm_core.engine.llm_engine import LLMEngine

    settings = engine_settings_from_args(args)
    speculative_config = EngineConfig.build(**settings)
    plain = LLMEngine(speculative_config.model_copy(update={"speculative_config": None}))
    speculative = LLMEngine(speculative_config)
    workload = build_workload(args, plain)
    timings: dict[str, list[StreamTiming]] = {"plain": [], "speculative": []}
    num_mismatches = 0
    for index, prompt in enumerate(workload.prompts):
        plain_timing, plain_tokens = time_stream_tokens(plain, prompt, workload.output_len)
        if index == args.num_warmup:
            speculative.spec_decode_stats = SpecDecodeStats()  # count the timed iterations only
        spec_timing, spec_tokens = time_stream_tokens(speculative, prompt, workload.output_len)
        num_mismatches += plain_tokens != spec_tokens
        if index >= args.num_warmup:
            timings["plain"].append(plain_timing)
            timings["speculative"].append(spec_timing)
    spec = speculative_config.speculative_config
    stats = speculative.spec_decode_stats
    plain_result = LatencyResult("no speculation", timings["plain"])
    spec_result = LatencyResult(f"{spec.method}, k={spec.num_speculative_tokens}", timings["speculative"])
    ratio = spec_result.decode_tokens_per_second_median / plain_result.decode_tokens_per_second_median
    lengths = sorted({len(prompt) for prompt in workload.prompts})
    model = speculative_config.model or "SmolLM2-135M-Instruct (default)"
    dtype = str(plain.model_info.dtype).removeprefix("torch.")
    rows = [
        f"| {result.system} | {result.ttft_median * 1e3:.1f} | {result.decode_tokens_per_second_mean:.1f} | "
        f"{result.decode_tokens_per_second_median:.1f} | {acceptance} |"
        for result, acceptance in (
            (plain_result, "- | 1"),
            (spec_result, f"{stats.acceptance_rate:.2f} | {stats.mean_accepted_length:.2f}"),
        )
    ]
    identical = "yes" if num_mismatches == 0 else f"no ({num_mismatches} of {len(workload.prompts)} prompts differ)"
    return "\n".join(
        [
            (
                f"bench latency, speculative: workload {workload.name} (prompts of {lengths[0]}-{lengths[-1]} "
                f"tokens, {workload.output_len} output tokens, EOS ignored, greedy); {args.num_iters} timed "
                f"iterations after {args.num_warmup} warm-up, alternating plain and speculative; model {model}, "
                f"{dtype}, quantization {speculative_config.quantization}; "
                f"speculative_config {spec.model_dump_json(exclude_none=True)}."
            ),
            "",
            "| system | TTFT p50 (ms) | decode tok/s mean | decode tok/s p50 "
            "| acceptance rate | mean accepted length |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            f"Decode speed-up (p50): {ratio:.2f}x. Outputs identical to plain greedy decoding: {identical}.",
        ]
    )

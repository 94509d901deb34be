"""``pagedllm bench latency``: W4, one request alone: time to first token and decode tokens/s.

Each timed iteration sends a fresh prompt of the same length (so that a prefix cache cannot serve
an earlier iteration's prompt) after untimed warm-up iterations; the table gives mean and median.
transformers' ``generate`` runs the same prompts in the same process as the baseline.
"""

from __future__ import annotations

import argparse
import functools
import gc
import time

from pagedllm_core.bench.plots import bar_chart, markdown_image
from pagedllm_core.bench.results import LatencyResult, StreamTiming
from pagedllm_core.bench.throughput import add_baseline_arguments, workload_for_engine
from pagedllm_core.bench.transformers_baseline import load_transformers_model, pad_token_id_for, time_single_stream
from pagedllm_core.bench.workloads import Workload, latency_workload
from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args
from pagedllm_core.sampling_params import SamplingParams


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``pagedllm bench latency``; the workload defaults are W4's."""
    group = parser.add_argument_group("workload")
    group.add_argument("--input-len", type=int, default=128, help="prompt tokens (default: 128)")
    group.add_argument("--output-len", type=int, default=128, help="tokens generated (default: 128)")
    group.add_argument("--num-iters", type=int, default=5, help="timed iterations (default: 5)")
    group.add_argument("--num-warmup", type=int, default=1, help="untimed iterations first (default: 1)")
    group.add_argument("--workload-seed", type=int, default=0, help="seed of the prompts (default: 0)")
    group.add_argument(
        "--workload",
        choices=["W4", "copy"],
        default="W4",
        help="W4: random token prompts; copy: prompts asking to repeat or edit a text they give (with "
        "--speculative-config only; default: W4)",
    )
    add_baseline_arguments(parser)
    parser.add_argument("--plot", metavar="PNG", default=None, help="also draw TTFT and decode speed as bar charts")
    add_engine_arguments(parser)


def time_engine_stream(engine, prompt: list[int], output_len: int) -> StreamTiming:
    """Generate for one prompt alone on an idle engine, greedy and ignoring EOS, timing its tokens."""
    return time_stream_tokens(engine, prompt, output_len)[0]


def time_stream_tokens(engine, prompt: list[int], output_len: int) -> tuple[StreamTiming, list[int]]:
    """:func:`time_engine_stream`, also returning the generated tokens."""
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    began = time.perf_counter()
    engine.add_request("latency", prompt, params)
    first_token_at = None
    token_ids: list[int] = []
    while engine.has_unfinished_requests():
        for output in engine.step():
            token_ids = list(output.outputs[0].token_ids)
            if first_token_at is None and token_ids:
                first_token_at = time.perf_counter()
    return StreamTiming(first_token_at - began, time.perf_counter() - first_token_at, len(token_ids)), token_ids


def run_latency(time_stream, workload: Workload, num_warmup: int, system: str) -> LatencyResult:
    """``time_stream(prompt, output_len) -> StreamTiming`` over the workload's prompts; the first
    ``num_warmup`` are not kept."""
    timings = [time_stream(prompt, workload.output_len) for prompt in workload.prompts]
    return LatencyResult(system, timings[num_warmup:])


def run_latency_bench(args: argparse.Namespace) -> str:
    """pagedllm, then the baseline, on the same prompts; returns the markdown report."""
    from pagedllm_core.config import EngineConfig
    from pagedllm_core.engine.llm_engine import LLMEngine

    if args.speculative_config is not None:
        from pagedllm_core.bench.speculative import run_speculative_latency_bench

        return run_speculative_latency_bench(args)
    config = EngineConfig.build(**engine_settings_from_args(args))
    engine = LLMEngine(config)
    workload = workload_for_engine(
        engine, latency_workload, seed=args.workload_seed, num_prompts=args.num_warmup + args.num_iters,
        input_len=args.input_len, output_len=args.output_len,
    )
    dtype, device = engine.model_info.dtype, engine.device
    pad_token_id = pad_token_id_for(engine)
    results = [run_latency(functools.partial(time_engine_stream, engine), workload, args.num_warmup, "pagedllm")]
    del engine
    gc.collect()
    if args.baseline:
        model = load_transformers_model(config, dtype, device)
        time_stream = functools.partial(time_single_stream, model, pad_token_id=pad_token_id)
        results.append(run_latency(time_stream, workload, args.num_warmup, "transformers generate"))

    lines = [
        (
            f"bench latency: {workload.name}, one request of {args.input_len} prompt tokens and {args.output_len} "
            f"output tokens (EOS ignored), greedy; {args.num_iters} timed iterations after {args.num_warmup} "
            f"warm-up, each with its own prompt; model {config.model or 'SmolLM2-135M-Instruct (default)'}, "
            f"{str(dtype).removeprefix('torch.')}."
        ),
        "",
        "| system | TTFT mean (ms) | TTFT p50 (ms) | decode tok/s mean | decode tok/s p50 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        lines.append(
            f"| {result.system} | {result.ttft_mean * 1e3:.1f} | {result.ttft_median * 1e3:.1f} "
            f"| {result.decode_tokens_per_second_mean:.1f} | {result.decode_tokens_per_second_median:.1f} |"
        )
    if args.plot:
        bar_chart(
            args.plot,
            f"{workload.name}: one stream, {args.input_len} prompt / {args.output_len} output tokens",
            {
                "time to first token, p50 (ms)": {result.system: result.ttft_median * 1e3 for result in results},
                "decode tokens/s, p50": {result.system: result.decode_tokens_per_second_median for result in results},
            },
        )
        docs_path = getattr(args, "write_docs", None)
        lines += ["", markdown_image(args.plot, docs_path, "latency of pagedllm and transformers")]
    return "\n".join(lines)

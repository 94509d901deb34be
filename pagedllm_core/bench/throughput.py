"""``pagedllm bench throughput``: W1 offline, pagedllm against transformers' static batches.

Every request of the workload is added at once and the engine steps until all are done, as vLLM's
offline throughput benchmark does. The same run measures the machine's matmul peak (for the
fraction of the roofline reached), the KV cache's usage and waste step by step, and the baseline on
the same prompts with the same weights and dtype.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from pagedllm_core.bench.kv_usage import KVUsageTally, paged_slots_per_sequence, static_batch_slots_per_sequence
from pagedllm_core.bench.peak_memory import PeakMemory
from pagedllm_core.bench.plots import bar_chart, markdown_image
from pagedllm_core.bench.results import ThroughputResult
from pagedllm_core.bench.roofline import MatmulPeak, ModelFlops, measure_matmul_peak
from pagedllm_core.bench.transformers_baseline import load_transformers_model, pad_token_id_for, run_static_batches
from pagedllm_core.bench.workloads import Workload, throughput_workload
from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args
from pagedllm_core.sampling_params import SamplingParams


def add_throughput_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``pagedllm bench throughput``; the workload defaults are W1's."""
    group = parser.add_argument_group("workload")
    group.add_argument("--num-prompts", type=int, default=200, help="requests (default: 200)")
    group.add_argument("--min-input-len", type=int, default=64, help="shortest prompt in tokens (default: 64)")
    group.add_argument("--max-input-len", type=int, default=512, help="longest prompt in tokens (default: 512)")
    group.add_argument("--output-len", type=int, default=128, help="tokens generated per request (default: 128)")
    group.add_argument("--workload-seed", type=int, default=0, help="seed of the prompts (default: 0)")
    add_baseline_arguments(parser, batch_sizes="16,32")
    group = parser.add_argument_group("report")
    group.add_argument(
        "--matmul-size", type=int, default=4096,
        help="largest side of the square matmuls that measure the peak FLOP/s (default: 4096)",
    )
    group.add_argument("--plot", metavar="PNG", default=None, help="also draw the throughput as a bar chart here")
    add_engine_arguments(parser)


def add_baseline_arguments(parser: argparse.ArgumentParser, batch_sizes: str | None = None) -> None:
    """``--no-baseline`` and, for batched benchmarks, ``--baseline-batch-sizes``."""
    group = parser.add_argument_group("transformers baseline")
    group.add_argument(
        "--baseline", action=argparse.BooleanOptionalAction, default=True,
        help="also run transformers' generate on the same prompts (default: yes; slow)",
    )
    if batch_sizes is not None:
        group.add_argument(
            "--baseline-batch-sizes", type=_parse_sizes, default=_parse_sizes(batch_sizes),
            help=f"static batch sizes of the baseline, comma-separated (default: {batch_sizes})",
        )


def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes {text!r} are not comma-separated integers, e.g. 16,32") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be at least 1; got {text!r}")
    return sizes


def workload_for_engine(engine, build_workload, **settings) -> Workload:
    """A workload of random token ids from the engine's vocabulary, special tokens left out."""
    tokenizer = engine.tokenizer
    return build_workload(len(tokenizer), tokenizer.all_special_ids, **settings)


def run_throughput(engine, workload: Workload, kv_usage: KVUsageTally | None = None) -> ThroughputResult:
    """Run the workload on ``engine`` (an idle :class:`~pagedllm_core.engine.llm_engine.LLMEngine`),
    greedy and ignoring EOS; ``kv_usage``, when given, observes every step."""
    params = SamplingParams(temperature=0.0, max_tokens=workload.output_len, ignore_eos=True)
    peak_memory = PeakMemory(engine.device)
    _warm_up(engine)
    peak_memory.reset()
    num_output_tokens = 0
    began = time.perf_counter()
    for index, prompt in enumerate(workload.prompts):
        engine.add_request(f"throughput-{index}", prompt, params)
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                num_output_tokens += len(output.outputs[0].token_ids)
        if kv_usage is not None:
            kv_usage.observe(engine)
    elapsed = time.perf_counter() - began
    return ThroughputResult(
        system="pagedllm",
        num_requests=len(workload.prompts),
        num_prompt_tokens=workload.num_prompt_tokens,
        num_output_tokens=num_output_tokens,
        elapsed=elapsed,
        peak_memory_bytes=peak_memory.read(),
        model_flops=_model_flops(engine).workload_flops(workload),
    )


def _model_flops(engine) -> ModelFlops:
    """Counted on the engine's own model when its worker is in this process, else on transformers' model
    of the same config built on the meta device (no weights)."""
    hf_config = engine.model_info.hf_config
    worker = getattr(engine.executor, "worker", None)
    if worker is not None:
        return ModelFlops.of_model(worker.model_runner.model, hf_config)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return ModelFlops.of_model(AutoModelForCausalLM.from_config(hf_config), hf_config)


def _warm_up(engine) -> None:
    """One short request, so that first-call costs (allocator, kernels) stay out of the timing."""
    engine.add_request("warm-up", list(range(1, 17)), SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()


def run_throughput_bench(args: argparse.Namespace) -> str:
    """The whole benchmark: matmul peaks, pagedllm, then the baselines; returns the markdown report."""
    from pagedllm_core.config import EngineConfig
    from pagedllm_core.engine.llm_engine import LLMEngine

    config = EngineConfig.build(**engine_settings_from_args(args))
    engine = LLMEngine(config)
    workload = workload_for_engine(
        engine, throughput_workload, num_prompts=args.num_prompts, seed=args.workload_seed,
        min_input_len=args.min_input_len, max_input_len=args.max_input_len, output_len=args.output_len,
    )
    dtype, device = engine.model_info.dtype, engine.device
    peak_dtypes = dict.fromkeys((dtype, torch.bfloat16))  # the engine's first; bfloat16 once
    peaks = [measure_matmul_peak(peak_dtype, args.matmul_size, device) for peak_dtype in peak_dtypes]
    engine_peak = next(peak for peak in peaks if peak.dtype == dtype)
    kv_usage = KVUsageTally()
    results = [run_throughput(engine, workload, kv_usage)]
    hit_rate = engine.prefix_cache_stats().hit_rate
    kv_pool_tokens = engine.kv_cache_manager.num_blocks * config.block_size
    pad_token_id = pad_token_id_for(engine)
    del engine
    gc.collect()

    if args.baseline:
        model = load_transformers_model(config, dtype, device)
        results += [run_static_batches(model, workload, size, pad_token_id) for size in args.baseline_batch_sizes]
        del model
        gc.collect()

    lines = [
        _title(workload, config, dtype, kv_pool_tokens),
        "",
        *_throughput_table(results, engine_peak),
        "",
        "Matmul peaks measured in this run: " + "; ".join(_peak_text(peak) for peak in peaks) + ".",
        "",
        (
            f"KV cache (pagedllm): pool usage mean {kv_usage.mean_usage:.1%}, peak {kv_usage.peak_usage:.1%}; "
            f"waste {kv_usage.waste:.2%} of allocated slots (unfilled block tails, over all steps); "
            f"peak running sequences {kv_usage.peak_running_sequences}; prefix cache hit rate {hit_rate:.1%}."
        ),
        "",
        *_concurrency_table(workload, config.block_size, kv_pool_tokens, args.baseline_batch_sizes, kv_usage),
    ]
    if args.plot:
        bar_chart(
            args.plot,
            f"{workload.name}: {len(workload.prompts)} requests, {workload.output_len} output tokens each",
            {
                "output tokens/s": {result.system: result.output_tokens_per_second for result in results},
                "requests/s": {result.system: result.requests_per_second for result in results},
            },
        )
        docs_path = getattr(args, "write_docs", None)
        lines += ["", markdown_image(args.plot, docs_path, "throughput of pagedllm and transformers")]
    return "\n".join(lines)


def _title(workload: Workload, config, dtype: torch.dtype, kv_pool_tokens: int) -> str:
    lengths = [len(prompt) for prompt in workload.prompts]
    return (
        f"bench throughput: {workload.name}, {len(lengths)} requests, prompts of {min(lengths)}-{max(lengths)} "
        f"tokens (mean {sum(lengths) / len(lengths):.0f}), {workload.output_len} output tokens each (EOS ignored), "
        f"greedy; model {config.model or 'SmolLM2-135M-Instruct (default)'}, {_dtype_name(dtype)}, "
        f"KV pool {kv_pool_tokens:,} tokens (kv_cache_dtype {config.kv_cache_dtype}) in blocks of {config.block_size}."
    )


def _throughput_table(results: list[ThroughputResult], peak: MatmulPeak) -> list[str]:
    ours = results[0]
    lines = [
        (
            "| system | requests/s | output tok/s | total tok/s | elapsed (s) | peak memory (GiB) | model FLOP/s "
            f"| of {_dtype_name(peak.dtype)} peak | pagedllm speed-up |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        speed_up = "-" if result is ours else f"{ours.output_tokens_per_second / result.output_tokens_per_second:.2f}x"
        flops = result.model_flops_per_second
        lines.append(
            f"| {result.system} | {result.requests_per_second:.2f} | {result.output_tokens_per_second:.1f} "
            f"| {result.total_tokens_per_second:.1f} | {result.elapsed:.1f} | {result.peak_memory_bytes / 2**30:.2f} "
            f"| {_format_flops(flops)} | {flops / peak.flops_per_second:.1%} | {speed_up} |"
        )
    return lines


def _concurrency_table(
    workload: Workload, block_size: int, kv_pool_tokens: int, batch_sizes: list[int], kv_usage: KVUsageTally
) -> list[str]:
    """Sequences at full length that fit in the pool at once, paged and padded, from the workload's lengths."""
    prompt_lengths = [len(prompt) for prompt in workload.prompts]
    rows = [(
        f"pagedllm (blocks of {block_size}, allocated as tokens arrive)",
        paged_slots_per_sequence([length + workload.output_len for length in prompt_lengths], block_size),
    )]
    rows += [
        (f"static batch {size} (left-padded to the batch's longest prompt)",
         static_batch_slots_per_sequence(prompt_lengths, workload.output_len, size))
        for size in batch_sizes
    ]
    lines = [
        f"| system | KV slots per sequence at full length (mean) | sequences in {kv_pool_tokens:,} KV slots |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {slots:.0f} | {kv_pool_tokens / slots:.0f} |" for name, slots in rows),
        f"| pagedllm, measured: peak running sequences in this run | - | {kv_usage.peak_running_sequences} |",
    ]
    return lines


def _peak_text(peak: MatmulPeak) -> str:
    side = f"{peak.size}x{peak.size}"
    return f"{_dtype_name(peak.dtype)} {_format_flops(peak.flops_per_second)} ({side} by {side})"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _format_flops(flops_per_second: float) -> str:
    if flops_per_second >= 1e12:
        return f"{flops_per_second / 1e12:.2f} TFLOP/s"
    return f"{flops_per_second / 1e9:.1f} GFLOP/s"

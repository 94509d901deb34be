"""``pagedllm bench tp``: the same engine at several tensor-parallel sizes, side by side in one run.

For each size it times W4 (one stream: TTFT and decode tokens/s) and a small W1 (offline throughput),
and reads every worker's resident memory. Beside them it measures what tensor parallelism adds to
each decode step: the model's collectives (an all-reduce after every attention and MLP block and
after the embedding, an all-gather of the logits) and the broadcast of the step message, timed on
the model's own shapes between worker processes like the engine's.
"""

from __future__ import annotations

import argparse
import functools
import gc
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pagedllm_core.bench.docs_section import cpu_name
from pagedllm_core.bench.latency import run_latency, time_engine_stream
from pagedllm_core.bench.throughput import run_throughput, workload_for_engine
from pagedllm_core.bench.workloads import latency_workload, throughput_workload
from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args

# A decode step's message to the other ranks is a few hundred bytes to a few KiB.
STEP_MESSAGE_BYTES = 2048


def add_tp_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--tensor-parallel-sizes", default="1,2", help="sizes to compare (default: 1,2)")
    group.add_argument("--input-len", type=int, default=128, help="W4 prompt tokens (default: 128)")
    group.add_argument("--output-len", type=int, default=128, help="W4 and W1 output tokens (default: 128)")
    group.add_argument("--num-iters", type=int, default=3, help="W4 timed iterations (default: 3)")
    group.add_argument("--num-prompts", type=int, default=32, help="W1 requests (default: 32)")
    group.add_argument("--batch-sizes", default="1,32,256", help="rows per step for the collectives (default: 1,32,256)")
    group.add_argument("--collective-iters", type=int, default=200, help="timed calls per collective (default: 200)")
    add_engine_arguments(parser, skip=("tensor_parallel_size",))


@dataclass(frozen=True)
class SizeResult:
    """One tensor-parallel size's W4 and W1 figures and its workers' resident memory."""

    tensor_parallel_size: int
    ttft: float
    decode_tokens_per_second: float
    output_tokens_per_second: float
    rss_per_worker: list[int]


def run_tp_bench(args: argparse.Namespace) -> str:
    from pagedllm_core.config import EngineConfig
    from pagedllm_core.engine.llm_engine import LLMEngine

    sizes = [int(size) for size in args.tensor_parallel_sizes.split(",")]
    settings = engine_settings_from_args(args)
    results = []
    hf_config = None
    for size in sizes:
        engine = LLMEngine(EngineConfig.build(**settings, tensor_parallel_size=size))
        hf_config = engine.model_info.hf_config
        w4 = workload_for_engine(
            engine, latency_workload, seed=0, num_prompts=1 + args.num_iters, input_len=args.input_len,
            output_len=args.output_len,
        )
        latency = run_latency(functools.partial(time_engine_stream, engine), w4, 1, f"TP={size}")
        w1 = workload_for_engine(
            engine, throughput_workload, num_prompts=args.num_prompts, seed=0, min_input_len=64, max_input_len=256,
            output_len=args.output_len,
        )
        throughput = run_throughput(engine, w1)
        pids = getattr(engine.executor, "worker_pids", None)
        results.append(
            SizeResult(
                size, latency.ttft_median, latency.decode_tokens_per_second_median,
                throughput.output_tokens_per_second, [_resident_bytes(pid) for pid in pids or ["self"]],
            )
        )
        engine.shutdown()
        del engine
        gc.collect()
    parallel_sizes = [size for size in sizes if size > 1]
    collectives = {
        size: measure_collectives(size, hf_config, _sizes(args.batch_sizes), args.collective_iters) for size in parallel_sizes
    }
    return _report(args, results, collectives, hf_config)


def _sizes(text: str) -> list[int]:
    return [int(size) for size in text.split(",")]


def _resident_bytes(pid) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class CollectiveTimes:
    """Mean seconds of one call of each collective a decode step of ``rows`` sequences makes."""

    rows: int
    all_reduce: float
    all_gather: float
    broadcast: float

    def per_step(self, num_layers: int) -> float:
        # Two all-reduces per layer (attention, MLP), one after the embedding; one logits gather; one message.
        return (2 * num_layers + 1) * self.all_reduce + self.all_gather + self.broadcast


def measure_collectives(world_size: int, hf_config, batch_sizes: list[int], iterations: int) -> list[CollectiveTimes]:
    """Time the collectives on the model's shapes between ``world_size`` spawned processes (gloo, one thread each)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    hidden, vocab = hf_config.hidden_size, hf_config.vocab_size
    with tempfile.TemporaryDirectory(prefix="pagedllm-bench-tp-") as directory:
        init_method = (Path(directory) / "rendezvous").as_uri()
        processes = [
            context.Process(
                target=_time_collectives, args=(rank, world_size, init_method, hidden, vocab, batch_sizes, iterations, queue)
            )
            for rank in range(world_size)
        ]
        for process in processes:
            process.start()
        times = queue.get(timeout=600)
        for process in processes:
            process.join()
    return times


def _time_collectives(rank, world_size, init_method, hidden, vocab, batch_sizes, iterations, queue) -> None:
    from pagedllm_core.distributed.group import init_tensor_parallel_group

    torch.set_num_threads(1)
    tp = init_tensor_parallel_group(rank, world_size, init_method, torch.device("cpu"))
    vocab_shard = tp.shard(vocab).size
    payload = bytes(STEP_MESSAGE_BYTES) if tp.is_driver else None
    times = []
    for rows in batch_sizes:
        activations = torch.randn(rows, hidden)
        logits = torch.randn(rows, vocab_shard)
        times.append(
            CollectiveTimes(
                rows,
                _mean_seconds(functools.partial(tp.all_reduce, activations), iterations),
                _mean_seconds(functools.partial(tp.all_gather, logits, vocab), max(iterations // 10, 5)),
                _mean_seconds(functools.partial(tp.broadcast_bytes, payload), iterations),
            )
        )
    if tp.is_driver:
        queue.put(times)
    tp.destroy()


def _mean_seconds(call, iterations: int) -> float:
    for _ in range(3):
        call()
    began = time.perf_counter()
    for _ in range(iterations):
        call()
    return (time.perf_counter() - began) / iterations


def _report(args, results: list[SizeResult], collectives: dict[int, list[CollectiveTimes]], hf_config) -> str:
    base = results[0]
    lines = [
        (
            f"bench tp: model {args.model or 'SmolLM2-135M-Instruct (default)'}; W4 = one request of {args.input_len} "
            f"prompt and {args.output_len} output tokens (median of {args.num_iters}); W1 = {args.num_prompts} requests "
            f"of 64-256 prompt and {args.output_len} output tokens; greedy. CPU: {cpu_name()}."
        ),
        "",
        (
            "| tensor_parallel_size | W4 TTFT (ms) | W4 decode tok/s | W1 output tok/s "
            f"| vs TP={base.tensor_parallel_size} (W4 / W1) | resident memory per worker (MiB) |"
        ),
        "| ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        memory = ", ".join(f"{rss / 2**20:.0f}" for rss in result.rss_per_worker)
        lines.append(
            f"| {result.tensor_parallel_size} | {result.ttft * 1e3:.1f} | {result.decode_tokens_per_second:.1f} "
            f"| {result.output_tokens_per_second:.1f} "
            f"| {result.decode_tokens_per_second / base.decode_tokens_per_second:.2f}x / "
            f"{result.output_tokens_per_second / base.output_tokens_per_second:.2f}x | {memory} |"
        )
    num_layers = hf_config.num_hidden_layers
    for size, times in collectives.items():
        decode_step = 1 / next(result for result in results if result.tensor_parallel_size == size).decode_tokens_per_second
        lines += [
            "",
            (
                f"Communication per decode step at TP={size} (gloo, {num_layers} layers: {2 * num_layers + 1} "
                f"all-reduces of [rows, {hf_config.hidden_size}], one all-gather of the logits, one "
                f"{STEP_MESSAGE_BYTES}-byte step message), timed between two processes on the model's shapes:"
            ),
            "",
            (
                "| rows | all-reduce (µs) | logits all-gather (µs) | message broadcast (µs) | per step (ms) "
                "| share of a W4 decode step |"
            ),
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for time_ in times:
            share = f"{time_.per_step(num_layers) / decode_step:.0%}" if time_.rows == 1 else "-"
            lines.append(
                f"| {time_.rows} | {time_.all_reduce * 1e6:.0f} | {time_.all_gather * 1e6:.0f} "
                f"| {time_.broadcast * 1e6:.0f} | {time_.per_step(num_layers) * 1e3:.2f} | {share} |"
            )
    return "\n".join(lines)

"""``pagedllm bench step``: where a decode step's time goes outside the model, at several batch sizes.

The engine runs ``N`` greedy sequences until all of them decode, then times decode steps. Each
phase is timed by wrapping the engine's own methods for the run: scheduling, building the step
message, updating the worker's input batch and gathering its inputs, the sampling metadata, the
sampling step (processing, choosing, scoring), the core's outputs (advancing sequences, grouping
token ids by request) and output processing (detokenizing, stop strings, logprob text). Model time is
the forward pass plus the logits projection. ``LLM.generate`` runs every phase on one thread; the
server runs output processing on a thread of its own, beside the next step's forward pass, so its
step thread carries the rest (the last column).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from pagedllm_core.bench.docs_section import cpu_name
from pagedllm_core.bench.step_profile import MODEL_KINDS, instrument_model
from pagedllm_core.bench.timing import ExclusiveTimer
from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args
from pagedllm_core.sampling_params import SamplingParams

PHASES = ("schedule", "message", "inputs", "sampling metadata", "sampling", "outputs", "output processing")


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--batch-sizes", default="1,32,256", help="running sequences (default: 1,32,256)")
    group.add_argument("--input-len", type=int, default=32, help="prompt tokens per sequence (default: 32)")
    group.add_argument("--num-steps", type=int, default=8, help="timed decode steps per batch size (default: 8)")
    group.add_argument(
        "--profile",
        action="store_true",
        help="then time the same steps again with every model module timed too, and print where each millisecond "
        "goes (matmuls, norms, rotary, attention, cache write, LM head, ...)",
    )
    add_engine_arguments(parser)


def instrument(engine, timer: ExclusiveTimer) -> None:
    """Wrap the engine's phases (the in-process executor's runner included) with ``timer``."""
    from pagedllm_core.worker import model_runner as runner_module

    runner = engine.executor.worker.model_runner
    timer.wrap(engine.scheduler, "schedule", "schedule")
    timer.wrap(engine.message_builder, "build", "message")
    timer.wrap(runner, "_update_batch", "inputs")
    timer.wrap(runner, "_prepare_inputs", "inputs")
    timer.wrap(runner.model, "forward", "model")
    if runner.native_decoder is not None:
        timer.wrap(runner.native_decoder, "forward", "model")
    timer.wrap(runner.model, "compute_logits", "model")
    timer.wrap(runner_module, "build_sampling_metadata", "sampling metadata")
    timer.wrap(runner_module, "sample_tokens", "sampling")
    timer.wrap(engine.scheduler, "update_from_output", "outputs")
    timer.wrap(engine, "_token_outputs", "outputs")
    timer.wrap(engine.output_processor, "process", "output processing")


def run_step_bench(args: argparse.Namespace) -> str:
    from pagedllm_core.config import EngineConfig
    from pagedllm_core.engine.llm_engine import LLMEngine

    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    settings = {"max_num_seqs": max(batch_sizes), "max_num_batched_tokens": 8192, **engine_settings_from_args(args)}
    engine = LLMEngine(EngineConfig.build(**settings))
    timer = ExclusiveTimer()
    instrument(engine, timer)
    rows = [(batch_size, *_time_decode_steps(engine, timer, batch_size, args)) for batch_size in batch_sizes]
    lines = [
        f"Decode steps of `{engine.config.model or 'the default model'}` ({engine.model_info.dtype}), "
        f"{args.input_len}-token prompts, mean of {args.num_steps} steps; decoder layers "
        f"{'in one C++ call' if engine.executor.worker.model_runner.native_decoder else 'layer by layer in Python'}; "
        f"CPU: {cpu_name()}.",
        "",
        "| running sequences | step ms | model ms | " + " | ".join(f"{phase} ms" for phase in PHASES)
        + " | non-model share | step-thread non-model share (server) |",
        "| ---: | ---: | ---: | " + " | ".join("---:" for _ in PHASES) + " | ---: | ---: |",
    ]
    for batch_size, step_ms, phase_ms in rows:
        model_ms = phase_ms["model"]
        step_thread_ms = step_ms - phase_ms["output processing"]
        cells = " | ".join(f"{phase_ms[phase]:.2f}" for phase in PHASES)
        lines.append(
            f"| {batch_size} | {step_ms:.1f} | {model_ms:.1f} | {cells} | {(step_ms - model_ms) / step_ms:.1%} "
            f"| {(step_thread_ms - model_ms) / step_thread_ms:.1%} |"
        )
    if args.profile:
        # The module timers need the layers' Python: the decoder program runs them all in one call.
        engine.executor.worker.model_runner.native_decoder = None
        instrument_model(engine.executor.worker.model_runner, timer)
        profiled = [_time_decode_steps(engine, timer, batch_size, args) for batch_size in batch_sizes]
        for _, phase_ms in profiled:
            phase_ms["other model ops"] = phase_ms.pop("model", 0.0)
        lines += ["", *_profile_table(batch_sizes, [step_ms for _, step_ms, _ in rows], profiled)]
    return "\n".join(lines)


def _profile_table(batch_sizes: list[int], unprofiled_ms: list[float], profiled) -> list[str]:
    """Rows of work, a ms and a share column per batch size; "runner and executor glue" is the
    profiled step's time outside every timed call (the executor's call, slicing the logits' rows,
    moving the sampled tokens to Python)."""
    work = [*PHASES[:4], *MODEL_KINDS, *PHASES[4:]]
    lines = [
        "Where a decode step's time goes (`--profile`: every phase and model module timed, exclusive times, the "
        "layers run one by one in Python), ms per step:",
        "",
        "| work | " + " | ".join(f"{size} seq ms | share" for size in batch_sizes) + " |",
        "| --- | " + " | ".join("---: | ---:" for _ in batch_sizes) + " |",
    ]
    for name in [*work, "runner and executor glue"]:
        cells = []
        for step_ms, phase_ms in profiled:
            ms = step_ms - sum(phase_ms[phase] for phase in work) if name == "runner and executor glue" else phase_ms[name]
            cells.append(f"{ms:.3f} | {ms / step_ms:.1%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **step, profiled** | " + " | ".join(f"**{step_ms:.2f}** | 100%" for step_ms, _ in profiled) + " |")
    lines.append("| step, unprofiled | " + " | ".join(f"{ms:.2f} | -" for ms in unprofiled_ms) + " |")
    return lines


def _time_decode_steps(engine, timer: ExclusiveTimer, batch_size: int, args) -> tuple[float, dict[str, float]]:
    params = SamplingParams(temperature=0.0, max_tokens=args.num_steps + 4, ignore_eos=True)
    vocab = engine.vocab_size
    request_ids = []
    for index in range(batch_size):
        # Distinct prompts, so the prefix cache cannot make the batch cheaper than it is.
        prompt = [(7 + index * 131 + position * 17) % vocab for position in range(args.input_len)]
        request_ids.append(f"step-{batch_size}-{index}")
        engine.add_request(request_ids[-1], prompt, params)
    while engine.scheduler.num_waiting_sequences or any(
        sequence.num_output_tokens == 0 for sequence in engine.scheduler.running
    ):
        engine.step()
    timer.seconds.clear()
    began = time.perf_counter()
    for _ in range(args.num_steps):
        engine.step()
    step_ms = (time.perf_counter() - began) * 1000 / args.num_steps
    phase_ms = {phase: seconds * 1000 / args.num_steps for phase, seconds in timer.seconds.items()}
    engine.abort_request(request_ids)
    return step_ms, defaultdict(float, phase_ms)

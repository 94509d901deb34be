"""``pagedllm bench startup``: how long until the engine answers, from a fresh process each time.

Two clocks, both started just before a new process is launched (so Python's and torch's imports
count): ``pagedllm serve`` until ``/health`` first answers 200, and a script's ``LLM()`` until its
first generated token. The first round may compile kernels into torch's extension cache; the rounds
after it are the warm start a user sees on every later start.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time

from pagedllm_core.bench.docs_section import cpu_name
from pagedllm_core.server.process_control import stop_process, wait_until_healthy

FIRST_TOKEN_SCRIPT = """
import sys, time
from pagedllm_core import LLM, SamplingParams
llm = LLM(**{settings})
llm.generate(["Hello"], SamplingParams(max_tokens=1), use_tqdm=False)
print("first-token-at", time.time())
"""


def add_startup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model (default: the default model)")
    parser.add_argument("--dtype", default="auto", help="--dtype for both (default: auto)")
    parser.add_argument("--kv-cache-memory", default=None, help="--kv-cache-memory for both (default: the engine's)")
    parser.add_argument("--num-rounds", type=int, default=3, help="rounds of each measurement (default: 3)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a start counts as failed")


def run_startup_bench(args: argparse.Namespace) -> str:
    serve = [_time_serve(args) for _ in range(args.num_rounds)]
    first_token = [_time_first_token(args) for _ in range(args.num_rounds)]
    model = args.model or "SmolLM2-135M-Instruct (default)"
    lines = [
        (
            f"bench startup: model {model}, --dtype {args.dtype}; {args.num_rounds} rounds, each a fresh process; "
            f"round 1 may compile kernels, the later rounds are warm. CPU: {cpu_name()}."
        ),
        "",
        "| measurement | round 1 (s) | warm rounds (s) | warm median (s) |",
        "| --- | ---: | --- | ---: |",
    ]
    for name, times in (("`pagedllm serve` to the first 200 on /health", serve), ("`LLM()` to its first token", first_token)):
        warm = times[1:] or times
        lines.append(
            f"| {name} | {times[0]:.1f} | {', '.join(f'{t:.1f}' for t in warm)} | {statistics.median(warm):.1f} |"
        )
    return "\n".join(lines)


def _time_serve(args) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", "--port", str(port), "--dtype", args.dtype]
    if args.kv_cache_memory:
        command += ["--kv-cache-memory", args.kv_cache_memory]
    if args.model:
        command.append(args.model)
    began = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}", args.timeout)
        return time.time() - began
    finally:
        stop_process(process)


def _time_first_token(args) -> float:
    settings = {"dtype": args.dtype, **({"model": args.model} if args.model else {})}
    if args.kv_cache_memory:
        settings["kv_cache_memory"] = args.kv_cache_memory
    began = time.time()
    result = subprocess.run(
        [sys.executable, "-c", FIRST_TOKEN_SCRIPT.format(settings=repr(settings))],
        capture_output=True, text=True, timeout=args.timeout, check=True,
    )
    stamp = next(line for line in result.stdout.splitlines() if line.startswith("first-token-at"))
    return float(stamp.split()[1]) - began

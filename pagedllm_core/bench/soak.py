"""``pagedllm bench soak``: a long mixed load against a ``pagedllm serve`` it starts, checked for leaks.

Requests arrive at a fixed rate, each drawn (with ``--seed``) from a mix: streamed completions and
chats, ``n > 1``, structured outputs (a JSON schema or a regex), streams the client abandons after
the first chunk (``--abort-fraction``) and requests the server must refuse with a 400
(``--invalid-fraction``: poison numbers, forbidden template kwargs, broken JSON). The report counts
outcomes by kind (anything unexpected is an error: a 5xx, a 400 for a valid request, a stream that
ends without ``[DONE]``), the KV blocks still in use once the server is idle (0 when nothing
leaks) and the server process's resident memory at the start, the middle and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

import httpx

from pagedllm_core.server.process_control import stop_process, wait_until_healthy

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
# Requests the server must answer with 400, each a kind of bad input the hardening guards against.
INVALID_BODIES = (
    ("/v1/completions", {"prompt": "hi", "max_tokens": 4, "top_k": 9223372036854775808}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 4, "repetition_penalty": 1e-40}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 4, "seed": -1}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"tools": []}}),
    ("/v1/chat/completions", {"messages": []}),
    ("/v1/completions", "{not json"),
)
PROMPTS = ("Tell me about the sea.", "Write a haiku about trains.", "What is a paged cache?", "Hello, how are you?")


def add_soak_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``pagedllm bench soak``."""
    group = parser.add_argument_group("soak")
    group.add_argument("--model", default=None, help="model for the server (default: pagedllm serve's default)")
    group.add_argument(
        "--serve-args", default="", help="more flags for the pagedllm serve it starts, e.g. '--max-num-seqs 32'"
    )
    group.add_argument("--num-requests", type=int, default=2000, help="requests to send (default: 2000)")
    group.add_argument("--request-rate", type=float, default=4.0, help="requests per second, evenly spaced (default: 4)")
    group.add_argument("--max-tokens", type=int, default=16, help="largest max_tokens of a request (default: 16)")
    group.add_argument("--abort-fraction", type=float, default=0.2, help="share of streams abandoned mid-stream")
    group.add_argument("--invalid-fraction", type=float, default=0.05, help="share of requests that must get a 400")
    group.add_argument("--seed", type=int, default=0, help="seed of the request mix")


@dataclass
class Planned:
    """One request of the soak: where it goes, its body, and what should happen to it."""

    kind: str
    path: str
    body: dict | str
    stream: bool
    abandon: bool = False


def plan_requests(args: argparse.Namespace) -> list[Planned]:
    rng = random.Random(args.seed)
    plans = []
    for _ in range(args.num_requests):
        draw = rng.random()
        max_tokens = rng.randint(2, args.max_tokens)
        prompt = rng.choice(PROMPTS)
        if draw < args.invalid_fraction:
            path, body = rng.choice(INVALID_BODIES)
            plans.append(Planned("invalid", path, body, stream=False))
        elif draw < args.invalid_fraction + args.abort_fraction:
            body = {"prompt": prompt, "max_tokens": 200, "ignore_eos": True, "stream": True}
            plans.append(Planned("abandoned stream", "/v1/completions", body, stream=True, abandon=True))
        elif draw < args.invalid_fraction + args.abort_fraction + 0.1:
            structured = rng.choice([{"guided_json": SCHEMA}, {"guided_regex": r"\d{3}-\d{4}"}])
            chat = {"messages": [{"role": "user", "content": "Give me a record."}], "max_tokens": 40}
            plans.append(Planned("structured", "/v1/chat/completions", {**chat, **structured}, stream=False))
        elif draw < args.invalid_fraction + args.abort_fraction + 0.25:
            body = {"prompt": prompt, "max_tokens": max_tokens, "n": 2, "temperature": 0.8, "stream": rng.random() < 0.5}
            plans.append(Planned("n=2", "/v1/completions", body, stream=body["stream"]))
        elif rng.random() < 0.5:
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "stream": True}
            plans.append(Planned("chat stream", "/v1/chat/completions", body, stream=True))
        else:
            body = {"prompt": prompt, "max_tokens": max_tokens, "stream": rng.random() < 0.7}
            plans.append(Planned("completion", "/v1/completions", body, stream=body["stream"]))
    return plans


async def send(http: httpx.AsyncClient, plan: Planned) -> str:
    """The outcome of one planned request: ``"ok"`` or what went wrong."""
    content = plan.body if isinstance(plan.body, str) else json.dumps(plan.body)
    headers = {"content-type": "application/json"}
    try:
        async with http.stream("POST", plan.path, content=content, headers=headers) as response:
            if plan.kind == "invalid":
                return "ok" if response.status_code == 400 else f"invalid request got {response.status_code}"
            if response.status_code != 200:
                await response.aread()
                return f"status {response.status_code}: {response.text[:80]}"
            if not plan.stream:
                await response.aread()
                return "ok" if response.json().get("choices") else "no choices"
            last = ""
            async for line in response.aiter_lines():
                if not line:
                    continue
                if plan.abandon and line.startswith("data: {"):
                    return "ok"  # leaving the block closes the connection mid-stream
                if '"error"' in line:
                    return f"error event: {line[:80]}"
                last = line
            return "ok" if last == "data: [DONE]" else "stream ended without [DONE]"
    except httpx.HTTPError as error:
        return f"transport error: {type(error).__name__}"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def gauge(http: httpx.AsyncClient, name: str) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(f"pagedllm:{name} "):
            return float(line.split()[1])
    raise RuntimeError(f"the server reports no pagedllm:{name}")


async def wait_idle(http: httpx.AsyncClient, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (await gauge(http, "num_requests_running") or await gauge(http, "num_requests_waiting")):
            return
        await asyncio.sleep(0.2)


@dataclass
class SoakResult:
    outcomes: dict[str, Counter]  # kind -> outcome -> count
    rss: tuple[int, int, int]  # bytes at start, middle, end
    kv_blocks_in_use: float
    aborted_requests: float
    seconds: float
    healthy: bool


async def soak(base_url: str, pid: int, plans: list[Planned], rate: float) -> SoakResult:
    outcomes: dict[str, Counter] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=httpx.Limits(max_connections=None)) as http:
        # A plain and a structured request first, so that the start RSS includes what all requests share
        # (the compile worker, the first batch's buffers).
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        for warm_up in (chat, {**chat, "guided_json": SCHEMA}):
            await send(http, Planned("warm-up", "/v1/chat/completions", warm_up, stream=False))
        await wait_idle(http)
        rss_start = rss_bytes(pid)
        rss_middle = 0
        started = time.monotonic()

        async def one(index: int, plan: Planned) -> None:
            nonlocal rss_middle
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            if index == len(plans) // 2:
                rss_middle = rss_bytes(pid)
            outcome = await send(http, plan)
            outcomes.setdefault(plan.kind, Counter())[outcome] += 1

        await asyncio.gather(*(one(index, plan) for index, plan in enumerate(plans)))
        seconds = time.monotonic() - started
        await wait_idle(http)
        await asyncio.sleep(1.0)  # aborts from abandoned streams land within a step
        kv_blocks = await gauge(http, "kv_cache_used_blocks")
        aborted = await gauge(http, "request_aborted_total")
        healthy = (await http.get("/health")).status_code == 200
        return SoakResult(outcomes, (rss_start, rss_middle, rss_bytes(pid)), kv_blocks, aborted, seconds, healthy)


def format_report(result: SoakResult, args: argparse.Namespace) -> str:
    mib = [value / (1 << 20) for value in result.rss]
    num_errors = sum(count for kinds in result.outcomes.values() for outcome, count in kinds.items() if outcome != "ok")
    lines = [
        f"Soak: {args.num_requests} requests at {args.request_rate:g}/s ({result.seconds:.0f} s), seed {args.seed}.",
        "",
        "| kind | requests | ok | errors |",
        "|---|---:|---:|---|",
    ]
    for kind, counts in sorted(result.outcomes.items()):
        errors = ", ".join(f"{outcome} x{count}" for outcome, count in counts.items() if outcome != "ok") or "-"
        lines.append(f"| {kind} | {sum(counts.values())} | {counts['ok']} | {errors} |")
    lines += [
        "",
        "| measure | value |",
        "|---|---:|",
        f"| unexpected outcomes | {num_errors} |",
        f"| KV blocks in use at the end | {result.kv_blocks_in_use:g} |",
        f"| requests counted as aborted (pagedllm:request_aborted_total) | {result.aborted_requests:g} |",
        f"| server RSS at start / middle / end (MiB) | {mib[0]:.0f} / {mib[1]:.0f} / {mib[2]:.0f} |",
        f"| RSS growth start to end | {100 * (mib[2] - mib[0]) / mib[0]:+.1f}% |",
        f"| /health at the end | {'200' if result.healthy else 'not 200'} |",
    ]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", "--port", str(port)]
    if args.model:
        command.append(args.model)
    command += shlex.split(args.serve_args)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(process, url, timeout=600)
    return process, url


def run_soak_bench(args: argparse.Namespace) -> str:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    plans = plan_requests(args)
    process, url = start_server(args)
    try:
        result = asyncio.run(soak(url, process.pid, plans, args.request_rate))
    finally:
        stop_process(process, timeout=60)
    return format_report(result, args)

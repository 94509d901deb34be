"""Prefix-aware vs round-robin routing over `pagedllm serve --data-parallel-size N`, on a prefix-sharing workload.

Prompts come in groups that share a long prefix (a system prompt, a document asked several
questions) and differ in a short suffix; they are sent in random order, a few at a time. For each
configuration a fresh server is started: one engine (the baseline), then N replicas with each
routing policy. The table gives throughput and, per replica, the requests routed to it and its
prefix-cache hit rate (from the server's /metrics). Server flags after `--` go to every server:

    .venv/bin/python benchmarks/data_parallel_routing.py --write-docs docs/data_parallel.md -- --max-model-len 512
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pagedllm_core.bench.soak import free_port
from pagedllm_core.server.process_control import stop_process, wait_until_healthy

DOCS_SECTION = "data-parallel-routing"


@dataclass
class Run:
    """One configuration's measurements."""

    label: str
    seconds: float
    num_requests: int
    num_output_tokens: int
    replicas: list[tuple[int, float, float]]  # per replica: requests routed, prefix-cache queries, hits


def build_workload(args: argparse.Namespace) -> list[list[int]]:
    """``num_groups`` prefixes, ``requests_per_group`` prompts each, shuffled; token ids avoid the special ones."""
    rng = random.Random(args.seed)

    def tokens(n: int) -> list[int]:
        return [rng.randrange(1000, 40000) for _ in range(n)]

    prompts = []
    for _ in range(args.num_groups):
        prefix = tokens(args.prefix_len)
        prompts += [prefix + tokens(args.suffix_len) for _ in range(args.requests_per_group)]
    rng.shuffle(prompts)
    return prompts


def scrape(url: str) -> dict[str, dict[str, float]]:
    """``{family: {engine label or "": value}}`` of the counters the table needs."""
    wanted = {"pagedllm:dp_requests_routed", "pagedllm:dp_prefix_cache_queries", "pagedllm:dp_prefix_cache_hits",
              "pagedllm:prefix_cache_queries", "pagedllm:prefix_cache_hits"}
    values: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        if family.name in wanted:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    values.setdefault(family.name, {})[sample.labels.get("engine", "")] = sample.value
    return values


async def send_all(url: str, prompts: list[list[int]], output_len: int, concurrency: int) -> int:
    """Send every prompt, at most ``concurrency`` at a time; the number of tokens generated."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:

        async def one(prompt: list[int]) -> int:
            async with limit:
                body = {"prompt": prompt, "max_tokens": output_len, "ignore_eos": True, "temperature": 0}
                response = await http.post("/v1/completions", json=body)
                response.raise_for_status()
                return response.json()["usage"]["completion_tokens"]

        return sum(await asyncio.gather(*(one(prompt) for prompt in prompts)))


def measure(label: str, serve_flags: list[str], prompts: list[list[int]], args: argparse.Namespace) -> Run:
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", "--port", url.rsplit(":", 1)[1]]
    process = subprocess.Popen([*command, *serve_flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(process, url, 900)
        asyncio.run(send_all(url, [[7, 8, 9]], 4, 1))  # warm-up, outside the timing
        before = scrape(url)
        started = time.perf_counter()
        num_output_tokens = asyncio.run(send_all(url, prompts, args.output_len, args.concurrency))
        seconds = time.perf_counter() - started
        after = scrape(url)
    finally:
        stop_process(process)

    def delta(name: str, engine: str) -> float:
        return after.get(name, {}).get(engine, 0.0) - before.get(name, {}).get(engine, 0.0)

    if "pagedllm:dp_requests_routed" in after:
        engines = sorted(after["pagedllm:dp_requests_routed"], key=int)
        replicas = [
            (int(delta("pagedllm:dp_requests_routed", e)), delta("pagedllm:dp_prefix_cache_queries", e),
             delta("pagedllm:dp_prefix_cache_hits", e))
            for e in engines
        ]
    else:
        replicas = [(len(prompts), delta("pagedllm:prefix_cache_queries", ""), delta("pagedllm:prefix_cache_hits", ""))]
    return Run(label, seconds, len(prompts), num_output_tokens, replicas)


def format_table(runs: list[Run], args: argparse.Namespace) -> str:
    lines = [
        (
            f"Workload: {args.num_groups} prefixes of {args.prefix_len} tokens, {args.requests_per_group} prompts "
            f"each (+{args.suffix_len} tokens), {args.output_len} output tokens, {args.concurrency} requests in "
            "flight, shuffled."
        ),
        "",
        (
            "| configuration | requests/s | output tokens/s | vs one engine | requests routed per replica "
            "| prefix-cache hit rate per replica | hit rate overall |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    baseline = runs[0].num_requests / runs[0].seconds
    for run in runs:
        rate = run.num_requests / run.seconds
        routed = " / ".join(str(r[0]) for r in run.replicas)
        hit_rates = " / ".join(f"{r[2] / r[1]:.0%}" if r[1] else "-" for r in run.replicas)
        queries, hits = sum(r[1] for r in run.replicas), sum(r[2] for r in run.replicas)
        lines.append(
            f"| {run.label} | {rate:.2f} | {run.num_output_tokens / run.seconds:.1f} | {rate / baseline:.2f}x "
            f"| {routed} | {hit_rates} | {hits / queries:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-parallel-size", type=int, default=2)
    parser.add_argument("--num-groups", type=int, default=32, help="distinct shared prefixes (default: 32)")
    parser.add_argument("--requests-per-group", type=int, default=4, help="prompts per prefix (default: 4)")
    parser.add_argument("--prefix-len", type=int, default=256, help="shared prefix tokens (default: 256)")
    parser.add_argument("--suffix-len", type=int, default=16, help="tokens after the prefix (default: 16)")
    parser.add_argument("--output-len", type=int, default=16, help="max_tokens, with ignore_eos (default: 16)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", type=Path, default=None, help=f"write the table into this file's "
                        f"<!-- bench:{DOCS_SECTION} --> section")
    parser.add_argument("serve_args", nargs="*", help="flags for every pagedllm serve (after --)")
    args = parser.parse_args()
    prompts = build_workload(args)
    size = str(args.data_parallel_size)
    configurations = [
        ("one engine", []),
        (f"-dp {size}, prefix_aware", ["--data-parallel-size", size, "--data-parallel-routing", "prefix_aware"]),
        (f"-dp {size}, round_robin", ["--data-parallel-size", size, "--data-parallel-routing", "round_robin"]),
    ]
    runs = []
    for label, flags in configurations:
        runs.append(measure(label, [*args.serve_args, *flags], prompts, args))
        print(f"{label}: {runs[-1].seconds:.1f} s", file=sys.stderr)
    table = format_table(runs, args)
    print(table)
    if args.write_docs is not None:
        from pagedllm_core.bench.docs_section import write_section

        write_section(args.write_docs, DOCS_SECTION, table)


if __name__ == "__main__":
    main()

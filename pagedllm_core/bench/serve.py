"""``pagedllm bench serve``: load an OpenAI-compatible server and report throughput and latency.

Requests arrive as a Poisson process at ``--request-rate`` (``inf`` sends them all at once), each
streaming its answer so that time to first token (TTFT) and inter-token latency (ITL, the gap
between content chunks) are measured as a client sees them. Without ``--base-url`` the benchmark
starts pagedllm's own server in-process on a free loopback port, with the engine flags given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import time
from dataclasses import dataclass, field

import httpx

from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args

# Prompts are random sequences of these words, scaled after a calibration request so that they
# come out near --input-len tokens in the server's own tokenizer.
_WORDS = (
    "the quick brown fox jumps over lazy dog a paged attention engine keeps keys and values of every sequence "
    "in fixed size blocks so memory is allocated as grows freed when it ends continuous batching lets new "
    "requests join running batch at each step instead waiting for longest one to finish hello world how are "
    "you today once upon time there was little model that wanted write stories about cats dogs trains rivers sea"
).split()


def add_serve_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``pagedllm bench serve`` (engine flags apply when it starts its own server)."""
    group = parser.add_argument_group("load")
    group.add_argument("--base-url", default=None, help="server to load, e.g. http://127.0.0.1:8000 (default: start one)")
    group.add_argument("--api-key", default=None, help="Bearer key for --base-url")
    group.add_argument("--model-name", default=None, help="'model' to request (default: the server's first model)")
    group.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    group.add_argument("--num-prompts", type=int, default=100, help="requests to send (default: 100)")
    group.add_argument("--request-rate", type=float, default=math.inf, help="mean requests/s, Poisson; inf: all at once")
    group.add_argument("--max-concurrency", type=int, default=None, help="most requests in flight (default: no limit)")
    group.add_argument("--input-len", type=int, default=256, help="prompt tokens per request (approximate)")
    group.add_argument("--output-len", type=int, default=128, help="max_tokens per request")
    group.add_argument(
        "--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
        help="send ignore_eos so every request generates --output-len tokens (a vLLM extension)",
    )
    group.add_argument("--prompt", default=None, help="use this fixed prompt for every request instead of random words")
    group.add_argument("--seed", type=int, default=0, help="seed of prompts and arrival times")
    add_engine_arguments(parser, skip=("seed",))


@dataclass
class RequestResult:
    """What one request measured; times in seconds."""

    ok: bool
    error: str = ""
    ttft: float = 0.0
    latency: float = 0.0
    itls: list[float] = field(default_factory=list)
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0


class _Client:
    """Streams one request at a time to an OpenAI-compatible endpoint and times its chunks."""

    def __init__(self, http: httpx.AsyncClient, endpoint: str, model: str, output_len: int, ignore_eos: bool):
        self.http = http
        self.endpoint = endpoint
        self.model = model
        self.output_len = output_len
        self.ignore_eos = ignore_eos

    def _body(self, prompt: str, max_tokens: int) -> tuple[str, dict]:
        body = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.endpoint == "chat":
            return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": prompt}]}
        return "/v1/completions", {**body, "prompt": prompt}

    async def send(self, prompt: str, max_tokens: int | None = None) -> RequestResult:
        path, body = self._body(prompt, max_tokens or self.output_len)
        start = last = time.perf_counter()
        result = RequestResult(ok=False)
        num_chunks = 0
        try:
            async with self.http.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    return RequestResult(ok=False, error=f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line.removeprefix("data: "))
                    if "error" in chunk:
                        return RequestResult(ok=False, error=str(chunk["error"].get("message")))
                    if chunk.get("usage"):
                        result.num_prompt_tokens = chunk["usage"]["prompt_tokens"]
                        result.num_output_tokens = chunk["usage"]["completion_tokens"]
                    if not any(_chunk_text(choice) for choice in chunk.get("choices", [])):
                        continue
                    now = time.perf_counter()
                    if num_chunks == 0:
                        result.ttft = now - start
                    else:
                        result.itls.append(now - last)
                    last = now
                    num_chunks += 1
        except httpx.HTTPError as error:
            return RequestResult(ok=False, error=f"{type(error).__name__}: {error}")
        result.ok = True
        result.latency = time.perf_counter() - start
        result.num_output_tokens = result.num_output_tokens or num_chunks
        return result


def _chunk_text(choice: dict) -> str:
    return choice.get("text") or (choice.get("delta") or {}).get("content") or ""


async def _first_model(http: httpx.AsyncClient) -> str:
    response = await http.get("/v1/models")
    response.raise_for_status()
    return response.json()["data"][0]["id"]


def _random_prompt(rng: random.Random, num_words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(max(num_words, 1)))


async def _run(base_url: str, args: argparse.Namespace) -> tuple[list[RequestResult], float, str]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=None, limits=limits) as http:
        model = args.model_name or await _first_model(http)
        client = _Client(http, args.endpoint, model, args.output_len, args.ignore_eos)
        rng = random.Random(args.seed)
        # The warm-up request also tells how many tokens a word takes in this server's tokenizer.
        probe = await client.send(args.prompt or _random_prompt(rng, args.input_len), max_tokens=1)
        if not probe.ok:
            raise RuntimeError(f"the warm-up request failed: {probe.error}")
        words = args.input_len * args.input_len // max(probe.num_prompt_tokens, 1) if probe.num_prompt_tokens else args.input_len
        prompts = [args.prompt or _random_prompt(rng, words) for _ in range(args.num_prompts)]
        limit = asyncio.Semaphore(args.max_concurrency or len(prompts) or 1)

        async def one(prompt: str, delay: float) -> RequestResult:
            await asyncio.sleep(delay)
            async with limit:
                return await client.send(prompt)

        delays, clock = [], 0.0
        for _ in prompts:
            delays.append(clock)
            clock += 0.0 if math.isinf(args.request_rate) else rng.expovariate(args.request_rate)
        start = time.perf_counter()
        results = await asyncio.gather(*(one(prompt, delay) for prompt, delay in zip(prompts, delays)))
        return results, time.perf_counter() - start, model


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (math.nan,) * 3
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]

    return statistics.fmean(ordered), statistics.median(ordered), at(0.99)


def format_report(results: list[RequestResult], duration: float, title: str) -> str:
    """The benchmark's markdown table."""
    done = [result for result in results if result.ok]
    num_output = sum(result.num_output_tokens for result in done)
    num_prompt = sum(result.num_prompt_tokens for result in done)
    rows = [
        ("successful requests", f"{len(done)} of {len(results)}"),
        ("duration (s)", f"{duration:.2f}"),
        ("mean prompt tokens", f"{num_prompt / max(len(done), 1):.1f}"),
        ("mean output tokens", f"{num_output / max(len(done), 1):.1f}"),
        ("request throughput (req/s)", f"{len(done) / duration:.2f}"),
        ("output throughput (tok/s)", f"{num_output / duration:.1f}"),
        ("total throughput (tok/s)", f"{(num_prompt + num_output) / duration:.1f}"),
    ]
    for name, values in (
        ("TTFT", [result.ttft for result in done]),
        ("ITL", [itl for result in done for itl in result.itls]),
        ("E2E latency", [result.latency for result in done]),
    ):
        mean, p50, p99 = _percentiles(values)
        rows.append((f"{name} mean / p50 / p99 (ms)", f"{mean * 1e3:.1f} / {p50 * 1e3:.1f} / {p99 * 1e3:.1f}"))
    lines = [title, "", "| metric | value |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows)]
    errors = sorted({result.error for result in results if not result.ok})
    if errors:
        lines += ["", "errors: " + "; ".join(errors[:5])]
    return "\n".join(lines)


def run_serve_bench(args: argparse.Namespace) -> str:
    """Run the benchmark (starting a server when no ``--base-url``); returns the markdown report."""
    rate = "inf" if math.isinf(args.request_rate) else f"{args.request_rate:g}"
    if args.base_url is not None:
        results, duration, model = asyncio.run(_run(args.base_url, args))
        where = args.base_url
    else:
        results, duration, model = _run_with_own_server(args)
        where = "in-process pagedllm server"
    title = (
        f"bench serve: {model} at {where}, {args.endpoint}, {args.num_prompts} requests, rate {rate}/s, "
        f"input ~{args.input_len} / output {args.output_len} tokens"
    )
    return format_report(results, duration, title)


def _run_with_own_server(args: argparse.Namespace) -> tuple[list[RequestResult], float, str]:
    from pagedllm_core.config import EngineConfig
    from pagedllm_core.engine.async_engine import AsyncLLMEngine
    from pagedllm_core.server.app import build_app
    from pagedllm_core.server.background import BackgroundServer
    from pagedllm_core.server.cli import DEFAULT_MODEL_NAME
    from pagedllm_core.server.settings import ServerSettings

    config = EngineConfig.build(**engine_settings_from_args(args))
    name = config.model or DEFAULT_MODEL_NAME
    engine = AsyncLLMEngine.from_config(config)
    app = build_app(engine, ServerSettings(served_model_names=[name], model_source=name))
    with BackgroundServer(app) as server:
        return asyncio.run(_run(server.base_url, args))

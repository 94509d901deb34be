"""``pagedllm bench serve``: load an OpenAI-compatible server and report throughput and latency.

Requests arrive as a Poisson process at each of the ``--request-rate`` values in turn (``inf``
sends them all at once), each streaming its answer so that time to first token (TTFT) and
inter-token latency (ITL, the gap between content chunks) are measured as a client sees them. The
report has a column per rate. Without ``--base-url`` the benchmark starts pagedllm's own server
in-process on a free loopback port, with the engine flags given.

Prompts are random words scaled to about ``--input-len`` tokens, or with ``--dataset random-ids``
W3's random token ids, sent as token-id prompts so that any server gets exactly the same tokens.
Each rate gets prompts of its own (seed ``--seed`` plus the rate's index), so that a server's prefix
cache cannot serve one rate's prompts from an earlier rate's run.
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

from pagedllm_core.bench.plots import line_chart, markdown_image
from pagedllm_core.bench.workloads import serve_workload
from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args
from pagedllm_core.errors import ConfigError

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
    group.add_argument("--num-prompts", type=int, default=100, help="requests to send per rate (default: 100)")
    group.add_argument(
        "--request-rate", "--request-rates", type=parse_rates, default=[math.inf],
        help="mean requests/s, Poisson; inf: all at once; several comma-separated run one after another, e.g. inf,4,1",
    )
    group.add_argument("--max-concurrency", type=int, default=None, help="most requests in flight (default: no limit)")
    group.add_argument("--input-len", type=int, default=256, help="prompt tokens per request (approximate)")
    group.add_argument("--output-len", type=int, default=128, help="max_tokens per request")
    group.add_argument(
        "--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
        help="send ignore_eos so every request generates --output-len tokens (a vLLM extension)",
    )
    group.add_argument(
        "--dataset", choices=DATASETS, default="random-words",
        help="random-words: text near --input-len tokens; random-ids: W3's token ids from the tokenizer of "
        "--model/--tokenizer (completions only)",
    )
    group.add_argument("--prompt", default=None, help="use this fixed prompt for every request instead of random words")
    group.add_argument("--seed", type=int, default=0, help="seed of prompts and arrival times")
    group.add_argument("--plot", metavar="PNG", default=None, help="also draw throughput and latency against rate")
    add_engine_arguments(parser, skip=("seed",))


DATASETS = ("random-words", "random-ids")
# Seconds an idle connection stays in the client's pool: fewer than the 5 after which uvicorn (ours and vLLM's)
# closes it. At httpx's default of 5, a request now and then went out on a connection the server was closing,
# and failed with a ReadError.
KEEPALIVE_EXPIRY_S = 2.0
# Per rate, W3's prompts as token ids; None for text prompts.
TokenIdPromptSets = list[list[list[int]]] | None


def parse_rates(text: str) -> list[float]:
    """``"inf,4,1"`` -> ``[inf, 4.0, 1.0]``."""
    try:
        rates = [float(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"request rates {text!r} are not numbers, e.g. inf,4,1") from None
    if any(not rate > 0 for rate in rates):
        raise argparse.ArgumentTypeError(f"request rates must be positive; got {text!r}")
    return rates


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

    def _body(self, prompt: str | list[int], max_tokens: int) -> tuple[str, dict]:
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

    async def send(self, prompt: str | list[int], max_tokens: int | None = None) -> RequestResult:
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


@dataclass
class RateRun:
    """Every request sent at one rate, and the seconds from the first sent to the last answered."""

    rate: float
    results: list[RequestResult]
    duration: float


async def _run(base_url: str, args: argparse.Namespace, token_id_sets: TokenIdPromptSets) -> tuple[list[RateRun], str]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=KEEPALIVE_EXPIRY_S)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=None, limits=limits) as http:
        model = args.model_name or await _first_model(http)
        client = _Client(http, args.endpoint, model, args.output_len, args.ignore_eos)
        if token_id_sets:
            # One token repeated: no random prompt shares a block with it, so it warms no cache entry up.
            await _warm_up(client, [token_id_sets[0][0][0]] * args.input_len)
        prompt_sets = token_id_sets or await _text_prompt_sets(client, args)
        rates = args.request_rate
        return [await _run_at_rate(client, prompts, rate, args) for prompts, rate in zip(prompt_sets, rates)], model


async def _warm_up(client: _Client, prompt: str | list[int]) -> RequestResult:
    probe = await client.send(prompt, max_tokens=1)
    if not probe.ok:
        raise RuntimeError(f"the warm-up request failed: {probe.error}")
    return probe


async def _text_prompt_sets(client: _Client, args: argparse.Namespace) -> list[list[str]]:
    # The warm-up request also tells how many tokens a word takes in this server's tokenizer.
    probe = await _warm_up(client, args.prompt or _random_prompt(random.Random(args.seed), args.input_len))
    words = args.input_len * args.input_len // probe.num_prompt_tokens if probe.num_prompt_tokens else args.input_len
    sets = []
    for index in range(len(args.request_rate)):
        rng = random.Random(args.seed + 1 + index)
        sets.append([args.prompt or _random_prompt(rng, words) for _ in range(args.num_prompts)])
    return sets


async def _run_at_rate(client: _Client, prompts: list, rate: float, args: argparse.Namespace) -> RateRun:
    limit = asyncio.Semaphore(args.max_concurrency or len(prompts) or 1)

    async def one(prompt, delay: float) -> RequestResult:
        await asyncio.sleep(delay)
        async with limit:
            return await client.send(prompt)

    rng = random.Random(args.seed)
    delays, clock = [], 0.0
    for _ in prompts:
        delays.append(clock)
        clock += 0.0 if math.isinf(rate) else rng.expovariate(rate)
    start = time.perf_counter()
    results = await asyncio.gather(*(one(prompt, delay) for prompt, delay in zip(prompts, delays)))
    return RateRun(rate, list(results), time.perf_counter() - start)


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (math.nan,) * 3
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]

    return statistics.fmean(ordered), statistics.median(ordered), at(0.99)


@dataclass(frozen=True)
class RateSummary:
    """The figures of one rate's run; latencies in seconds as (mean, p50, p99)."""

    rate: float
    num_requests: int
    num_successful: int
    duration: float
    num_prompt_tokens: int
    num_output_tokens: int
    ttft: tuple[float, float, float]
    itl: tuple[float, float, float]
    e2e_latency: tuple[float, float, float]

    @classmethod
    def of(cls, run: RateRun) -> RateSummary:
        done = [result for result in run.results if result.ok]
        return cls(
            rate=run.rate,
            num_requests=len(run.results),
            num_successful=len(done),
            duration=run.duration,
            num_prompt_tokens=sum(result.num_prompt_tokens for result in done),
            num_output_tokens=sum(result.num_output_tokens for result in done),
            ttft=_percentiles([result.ttft for result in done]),
            itl=_percentiles([itl for result in done for itl in result.itls]),
            e2e_latency=_percentiles([result.latency for result in done]),
        )

    @property
    def rate_label(self) -> str:
        return "inf" if math.isinf(self.rate) else f"{self.rate:g}"

    @property
    def output_tokens_per_second(self) -> float:
        return self.num_output_tokens / self.duration


def format_report(runs: list[RateRun], title: str) -> str:
    """The benchmark's markdown table: a row per metric, a column per rate."""
    summaries = [RateSummary.of(run) for run in runs]

    def per_request(total: int, summary: RateSummary) -> str:
        return f"{total / max(summary.num_successful, 1):.1f}"

    def milliseconds(values: tuple[float, float, float]) -> str:
        return " / ".join(f"{value * 1e3:.1f}" for value in values)

    rows = {
        "successful requests": [f"{s.num_successful} of {s.num_requests}" for s in summaries],
        "duration (s)": [f"{s.duration:.2f}" for s in summaries],
        "mean prompt tokens": [per_request(s.num_prompt_tokens, s) for s in summaries],
        "mean output tokens": [per_request(s.num_output_tokens, s) for s in summaries],
        "request throughput (req/s)": [f"{s.num_successful / s.duration:.2f}" for s in summaries],
        "output throughput (tok/s)": [f"{s.output_tokens_per_second:.1f}" for s in summaries],
        "total throughput (tok/s)": [
            f"{(s.num_prompt_tokens + s.num_output_tokens) / s.duration:.1f}" for s in summaries
        ],
        "TTFT mean / p50 / p99 (ms)": [milliseconds(s.ttft) for s in summaries],
        "ITL mean / p50 / p99 (ms)": [milliseconds(s.itl) for s in summaries],
        "E2E latency mean / p50 / p99 (ms)": [milliseconds(s.e2e_latency) for s in summaries],
    }
    lines = [
        title,
        "",
        "| metric | " + " | ".join(f"rate {s.rate_label}/s" for s in summaries) + " |",
        "| --- |" + " --- |" * len(summaries),
        *(f"| {name} | " + " | ".join(values) + " |" for name, values in rows.items()),
    ]
    errors = sorted({result.error for run in runs for result in run.results if not result.ok})
    if errors:
        lines += ["", "errors: " + "; ".join(errors[:5])]
    return "\n".join(lines)


def plot_rates(path: str, title: str, runs: list[RateRun]) -> None:
    """Output throughput, TTFT and ITL (mean, p50, p99) against the request rate."""
    summaries = [RateSummary.of(run) for run in runs]

    def latency_series(pick) -> dict[str, list[float]]:
        return {
            statistic: [pick(s)[index] * 1e3 for s in summaries]
            for index, statistic in enumerate(("mean", "p50", "p99"))
        }

    line_chart(
        path,
        title,
        "request rate",
        [f"{s.rate_label}/s" for s in summaries],
        {
            "output tokens/s": {"output": [s.output_tokens_per_second for s in summaries]},
            "TTFT (ms)": latency_series(lambda s: s.ttft),
            "inter-token latency (ms)": latency_series(lambda s: s.itl),
        },
    )


def run_serve_bench(args: argparse.Namespace) -> str:
    """Run the benchmark at every rate (starting a server when no ``--base-url``); returns the markdown report."""
    token_id_sets = _token_id_prompt_sets(args) if args.dataset == "random-ids" else None
    if args.base_url is not None:
        runs, model = asyncio.run(_run(args.base_url, args, token_id_sets))
        where = args.base_url
    else:
        runs, model = _run_with_own_server(args, token_id_sets)
        where = "in-process pagedllm server"
    inputs = f"input {args.input_len} random token ids" if token_id_sets else f"input ~{args.input_len}"
    title = (
        f"bench serve: {model} at {where}, {args.endpoint}, {args.num_prompts} requests per rate, "
        f"{inputs} / output {args.output_len} tokens"
    )
    report = format_report(runs, title)
    if args.plot:
        plot_rates(args.plot, f"{args.num_prompts} requests per rate, {model}", runs)
        docs_path = getattr(args, "write_docs", None)
        report += "\n\n" + markdown_image(args.plot, docs_path, "serving: throughput and latency by rate")
    return report


def _token_id_prompt_sets(args: argparse.Namespace) -> list[list[list[int]]]:
    """Per rate, W3's prompts in the vocabulary of the tokenizer of ``--model`` (or ``--tokenizer``)."""
    from pagedllm_core.config import EngineConfig
    from pagedllm_core.model.loader import load_tokenizer, resolve_model_source

    if args.endpoint != "completions":
        raise ConfigError("--dataset random-ids sends token-id prompts, which only --endpoint completions takes")
    config = EngineConfig.build(**engine_settings_from_args(args))
    tokenizer = load_tokenizer(resolve_model_source(config), config)
    return [
        serve_workload(
            len(tokenizer), tokenizer.all_special_ids, num_prompts=args.num_prompts, seed=args.seed + index,
            input_len=args.input_len, output_len=args.output_len,
        ).prompts
        for index in range(len(args.request_rate))
    ]


def _run_with_own_server(args: argparse.Namespace, token_id_sets: TokenIdPromptSets) -> tuple[list[RateRun], str]:
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
        return asyncio.run(_run(server.base_url, args, token_id_sets))

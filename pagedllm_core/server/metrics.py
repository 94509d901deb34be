"""Prometheus metrics: engine load read at scrape time, token counts and latencies per request."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.outputs import RequestOutput
from pagedllm_core.server.request_context import current_request

PREFIX = "pagedllm:"
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


class _EngineCollector:
    """Gauges taken from the engine's latest stats snapshot whenever /metrics is scraped."""

    def __init__(self, engine: AsyncLLMEngine):
        self.engine = engine

    def collect(self):
        stats = self.engine.stats()
        gauges = (
            ("num_requests_running", "Requests in the running batch.", stats.num_running_requests),
            ("num_requests_waiting", "Requests waiting to be scheduled.", stats.num_waiting_requests),
            ("kv_cache_used_blocks", "KV cache blocks in use.", stats.num_used_blocks),
            ("kv_cache_total_blocks", "KV cache blocks in the pool.", stats.num_blocks),
            ("kv_cache_usage_perc", "Fraction of KV cache blocks in use (0 to 1).", stats.kv_cache_usage),
            ("engine_healthy", "1 while the engine loop runs, 0 once it has died.", int(self.engine.is_running)),
        )
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(PREFIX + name, documentation, value=value)
        # vLLM's names; the hit rate over any window is rate(hits) / rate(queries).
        counters = (
            ("prefix_cache_queries", "Tokens of admitted requests looked up in the prefix cache.", stats.num_prefix_cache_queries),
            ("prefix_cache_hits", "Looked-up tokens found in the prefix cache.", stats.num_prefix_cache_hits),
            ("spec_decode_num_drafts", "Sequence steps that verified speculative drafts.", stats.num_spec_decode_drafts),
            ("spec_decode_num_draft_tokens", "Speculative draft tokens proposed.", stats.num_spec_decode_draft_tokens),
            (
                "spec_decode_num_accepted_tokens",
                "Speculative draft tokens accepted.",
                stats.num_spec_decode_accepted_tokens,
            ),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(PREFIX + name, documentation, value=value)


class ServerMetrics:
    """The metrics of one server; ``/metrics`` renders :meth:`render` in Prometheus text format."""

    def __init__(self, engine: AsyncLLMEngine):
        # ``*_created`` timestamp series only double the output; vLLM drops them too (process-wide).
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine))
        self.prompt_tokens = Counter(
            PREFIX + "prompt_tokens", "Prompt tokens of requests that started generating.", registry=self.registry
        )
        self.generation_tokens = Counter(PREFIX + "generation_tokens", "Generated tokens.", registry=self.registry)
        self.finished_requests = Counter(
            PREFIX + "request_success", "Requests that finished, by finish reason.", ["finished_reason"],
            registry=self.registry,
        )
        self.aborted_requests = Counter(
            PREFIX + "request_aborted",
            "Requests aborted before they finished: the client went away, the request timed out, or the server "
            "shut down.",
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            PREFIX + "time_to_first_token_seconds", "Seconds from arrival to the first generated token.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            PREFIX + "inter_token_latency_seconds", "Seconds between consecutive generated tokens.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.request_latency = Histogram(
            PREFIX + "e2e_request_latency_seconds", "Seconds from arrival to the last token.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )

    def new_request(self) -> RequestTracker:
        return RequestTracker(self)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTracker:
    """Feeds one engine request's outputs into the metrics (and the access log's token count) as they arrive."""

    def __init__(self, metrics: ServerMetrics):
        self.metrics = metrics
        self.context = current_request()
        self.finished = False
        self.arrival_time = time.monotonic()
        self.last_token_time: float | None = None

    def observe(self, output: RequestOutput) -> None:
        """Take a delta output (a beam search's one whole output counts as one delta)."""
        now = time.monotonic()
        num_new = {c.index: len(c.token_ids) for c in output.outputs}
        num_steps = max(num_new.values(), default=0)  # a consumer that fell behind sees several steps at once
        if num_steps > 0:
            if self.last_token_time is None:
                self.metrics.prompt_tokens.inc(len(output.prompt_token_ids))
                self.metrics.time_to_first_token.observe(now - self.arrival_time)
            else:
                for _ in range(num_steps):
                    self.metrics.inter_token_latency.observe((now - self.last_token_time) / num_steps)
            self.metrics.generation_tokens.inc(sum(num_new.values()))
            if self.context is not None:
                self.context.num_completion_tokens += sum(num_new.values())
            self.last_token_time = now
        if output.finished:
            self.finished = True
            for completion in output.outputs:
                self.metrics.finished_requests.labels(completion.finish_reason or "unknown").inc()
            if any(completion.finish_reason == "abort" for completion in output.outputs):
                self.metrics.aborted_requests.inc()
            self.metrics.request_latency.observe(now - self.arrival_time)

    def abort(self) -> None:
        """The request is being aborted before its final output arrived."""
        if not self.finished:
            self.finished = True
            self.metrics.aborted_requests.inc()

"""``pagedllm bench serve`` against a running server."""

from __future__ import annotations

import argparse
import math

import pytest
import uvicorn

from pagedllm_core.bench.serve import KEEPALIVE_EXPIRY_S, add_serve_bench_arguments, run_serve_bench
from pagedllm_core.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_bench_serve_reports_a_markdown_table(server):
    report = run_serve_bench(
        parse("--base-url", server.base_url, "--num-prompts", "6", "--request-rate", "50", "--input-len", "16",
              "--output-len", "5")
    )
    assert "| successful requests | 6 of 6 |" in report
    assert "| mean output tokens | 5.0 |" in report
    for metric in ("request throughput", "output throughput", "TTFT mean / p50 / p99", "ITL mean / p50 / p99"):
        assert f"| {metric}" in report


def test_bench_serve_chat_endpoint_with_a_fixed_prompt(server):
    report = run_serve_bench(
        parse("--base-url", server.base_url, "--endpoint", "chat", "--num-prompts", "3", "--prompt", "Hello there",
              "--output-len", "3", "--max-concurrency", "2")
    )
    assert "| successful requests | 3 of 3 |" in report


def test_bench_serve_reports_failures(server):
    report = run_serve_bench(parse("--base-url", server.base_url, "--num-prompts", "2", "--output-len", "10000",
                                   "--input-len", "4"))
    assert "| successful requests | 0 of 2 |" in report and "errors: HTTP 400" in report


def test_bench_serve_runs_every_rate_with_a_column_each(server):
    report = run_serve_bench(
        parse("--base-url", server.base_url, "--num-prompts", "3", "--request-rate", "inf,40", "--input-len", "8",
              "--output-len", "4")
    )
    assert "| metric | rate inf/s | rate 40/s |" in report
    assert "| successful requests | 3 of 3 | 3 of 3 |" in report
    assert "| mean output tokens | 4.0 | 4.0 |" in report


def test_bench_serve_sends_w3_token_ids_from_the_models_tokenizer(server, tiny_model, tmp_path):
    plot = tmp_path / "serve.png"
    report = run_serve_bench(
        parse("--base-url", server.base_url, "--dataset", "random-ids", "--model", str(tiny_model),
              "--num-prompts", "4", "--request-rates", "inf,20", "--input-len", "24", "--output-len", "3",
              "--plot", str(plot))
    )
    assert "input 24 random token ids" in report
    assert "| mean prompt tokens | 24.0 | 24.0 |" in report  # token ids reach the engine as they are
    assert f"![serving: throughput and latency by rate]({plot})" in report and plot.is_file()


def test_bench_serve_token_ids_need_the_completions_endpoint(server, tiny_model):
    with pytest.raises(ConfigError, match="completions"):
        run_serve_bench(parse("--base-url", server.base_url, "--dataset", "random-ids", "--endpoint", "chat",
                              "--model", str(tiny_model)))


def test_request_rates_are_parsed_and_checked():
    assert parse("--request-rate", "inf,4,1").request_rate == [math.inf, 4.0, 1.0]
    assert parse().request_rate == [math.inf]
    with pytest.raises(SystemExit):
        parse("--request-rate", "0")


def test_idle_connections_leave_the_pool_before_uvicorn_closes_them():
    # Otherwise a request can go out on a connection the server is closing (W3 lost one of 600 that way).
    assert KEEPALIVE_EXPIRY_S < uvicorn.Config("pagedllm_core.server.app:app").timeout_keep_alive

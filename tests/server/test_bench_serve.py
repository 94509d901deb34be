"""``pagedllm bench serve`` against a running server."""

from __future__ import annotations

import argparse

from pagedllm_core.bench.serve import add_serve_bench_arguments, run_serve_bench


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

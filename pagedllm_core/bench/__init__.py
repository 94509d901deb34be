"""Benchmarks behind ``pagedllm bench ...``: each prints a markdown table ready to paste into docs."""

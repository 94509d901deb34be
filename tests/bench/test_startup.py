"""``pagedllm bench startup`` times fresh processes until the server is healthy and until LLM()'s first token."""

import argparse

from pagedllm_core.bench.startup import run_startup_bench


def test_the_startup_bench_reports_both_clocks_for_every_round(tiny_model_dir):
    args = argparse.Namespace(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", num_rounds=1, timeout=300,
                              kv_cache_memory="64MiB")
    table = run_startup_bench(args)
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[3]) > 0

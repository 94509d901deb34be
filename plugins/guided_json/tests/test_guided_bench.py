"""``pagedllm bench guided`` runs end to end on a tiny model and prints every row of its table."""

from __future__ import annotations

from pagedllm_core.bench.guided import run_guided_bench
from pagedllm_core.entrypoints.cli import build_parser
from pagedllm_core.testing import build_tiny_model


def test_bench_guided_prints_its_table(tmp_path):
    model_dir = build_tiny_model(tmp_path, "LlamaForCausalLM")
    args = build_parser().parse_args(
        [
            "bench",
            "guided",
            "--num-prompts",
            "2",
            "--max-tokens",
            "8",
            "--model",
            str(model_dir),
            "--num-kv-blocks",
            "64",
        ]
    )
    table = run_guided_bench(args)
    for row in (
        "first request's compile",
        "compile of a new schema",
        "compile of a cached schema",
        "output tok/s with guidance",
        "output tok/s without guidance, same lengths",
        "mask time per step, masks built fresh",
        "mask time per step, masks cached",
    ):
        assert f"| {row}" in table

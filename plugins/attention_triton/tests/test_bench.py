import argparse

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_core.bench.attention import add_attention_arguments, run_attention_bench  # noqa: E402


def test_bench_tables_both_backends_on_decode_and_prefill():
    parser = argparse.ArgumentParser()
    add_attention_arguments(parser)
    args = parser.parse_args(
        "--backends torch,triton --num-heads 4 --num-kv-heads 2 --head-size 64 "
        "--decode-shapes 2x40 --prefill-shapes 1x20 --warmup 0 --iters 1".split()
    )

    table = run_attention_bench(args)

    rows = [line for line in table.splitlines() if line.startswith("| torch") or line.startswith("| triton")]
    assert [row.split(" | ")[:3] for row in rows] == [
        ["| torch", "decode", "2 x 40"],
        ["| triton", "decode", "2 x 40"],
        ["| torch", "prefill", "1 x 20"],
        ["| triton", "prefill", "1 x 20"],
    ]
    if not torch.cuda.is_available():
        assert all("not a speed" in row for row in rows if row.startswith("| triton"))

"""``pagedllm bench step`` times every phase of real decode steps and reports them per batch size."""

import pytest

from pagedllm_core.entrypoints.cli import build_parser


def test_step_bench_reports_each_batch_size_with_its_phases(tiny_llama):
    from pagedllm_core.bench.step import PHASES, run_step_bench

    args = build_parser().parse_args(
        ["bench", "step", "--model", str(tiny_llama), "--batch-sizes", "1,4", "--num-steps", "2", "--input-len", "8"]
    )
    table = run_step_bench(args)
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(row[0]) for row in rows] == [1, 4]
    for row in rows:
        step_ms, model_ms, *phase_ms, share, step_thread_share = (cell.strip() for cell in row[1:])
        assert len(phase_ms) == len(PHASES)
        assert 0 < float(model_ms) < float(step_ms)
        assert all(float(ms) > 0 for ms in phase_ms)  # every phase ran and was timed
        assert 0 < float(step_thread_share.rstrip("%")) < float(share.rstrip("%")) < 100


def test_step_profile_splits_the_model_by_kind_and_adds_up_to_the_step(tiny_llama):
    from pagedllm_core.bench.step import run_step_bench

    args = build_parser().parse_args(
        ["bench", "step", "--model", str(tiny_llama), "--batch-sizes", "1,2", "--num-steps", "2", "--input-len", "8",
         "--profile"]
    )
    table = run_step_bench(args)
    profile = table.split("Where a decode step's time goes", 1)[1]
    cells = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in profile.splitlines() if line.startswith("| ")}
    for kind in ("norms", "matmuls", "rotary", "cache write", "attention", "activation", "LM head", "embedding",
                 "other model ops", "sampling", "inputs"):
        assert all(float(cells[kind][column]) > 0 for column in (0, 2)), kind  # timed at both batch sizes
    for column in (0, 2):
        step_ms = float(cells["**step, profiled**"][column].strip(" *"))
        parts = [float(row[column]) for name, row in cells.items() if name not in ("work", "---") and "step" not in name]
        assert sum(parts) == pytest.approx(step_ms, abs=0.01)  # rows rounded to 3 decimals
        assert float(cells["runner and executor glue"][column]) >= 0

"""``pagedllm bench latency --speculative-config``: plain and speculative side by side."""

import json

import pytest

from pagedllm_core.entrypoints.cli import main


@pytest.mark.parametrize("workload", ["W4", "copy"])
def test_command_reports_speed_acceptance_and_identical_outputs(workload, tiny_model_dir, capsys):
    directory = str(tiny_model_dir("LlamaForCausalLM"))
    speculative = {"method": "draft_model", "model": directory, "num_speculative_tokens": 3}
    main(["bench", "latency", "--model", directory, "--dtype", "float32", "--input-len", "16", "--output-len", "9",
          "--num-iters", "2", "--num-warmup", "1", "--kv-cache-memory", "1MiB", "--workload", workload,
          "--speculative-config", json.dumps(speculative)])
    report = capsys.readouterr().out
    assert f"workload {workload}" in report
    assert "| no speculation |" in report
    # The target drafting for itself: every draft is accepted, 3 drafts and 1 own token per step.
    assert "| draft_model, k=3 |" in report and "| 1.00 | 4.00 |" in report
    assert "Outputs identical to plain greedy decoding: yes." in report

"""``pagedllm bench embed`` on all-MiniLM-L6-v2 and on a decoder pooled for embeddings."""

import re

from pagedllm_core.entrypoints.cli import main


def test_command_reports_both_systems_and_their_agreement(capsys):
    main(["bench", "embed", "--model", "sentence-transformers/all-MiniLM-L6-v2", "--num-prompts", "24",
          "--max-words", "12"])
    report = capsys.readouterr().out
    assert "24 sentences of 4-12 random words" in report
    ours = re.search(r"\| pagedllm LLM.embed \| [\d.]+ \| \d+ \| \d+ \| (1\.000000) \|", report)
    baseline = re.search(r"\| sentence-transformers encode \(batch 32\) \| [\d.]+ \| \d+ \| \d+ \| ([\d.]+) \|", report)
    assert ours and baseline and float(baseline.group(1)) > 1 - 1e-4


def test_decoder_has_no_sentence_transformers_baseline(tiny_llama, capsys):
    main(["bench", "embed", "--model", str(tiny_llama), "--task", "embed", "--num-prompts", "4", "--max-words", "6"])
    report = capsys.readouterr().out
    assert "No baseline" in report and "| pagedllm LLM.embed |" in report and "sentence-transformers encode" not in report

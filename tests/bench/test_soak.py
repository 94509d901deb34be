"""``pagedllm bench soak``: the request mix, and a short soak of a real ``pagedllm serve`` that must come out clean."""

from __future__ import annotations

import argparse
import re
from collections import Counter

from pagedllm_core.bench.soak import add_soak_arguments, plan_requests, run_soak_bench


def soak_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_soak_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_mix_has_every_kind_in_its_share_and_is_seeded():
    args = soak_args("--num-requests", "2000")
    plans = plan_requests(args)
    kinds = Counter(plan.kind for plan in plans)
    assert set(kinds) == {"invalid", "abandoned stream", "structured", "n=2", "chat stream", "completion"}
    assert 0.17 < kinds["abandoned stream"] / len(plans) < 0.23
    assert 0.03 < kinds["invalid"] / len(plans) < 0.07
    assert [plan.body for plan in plan_requests(args)] == [plan.body for plan in plans]
    assert [plan.body for plan in plan_requests(soak_args("--seed", "1"))] != [plan.body for plan in plans[:2000]]


def test_a_short_soak_of_a_real_server_is_clean(tiny_model_dir):
    model = tiny_model_dir("LlamaForCausalLM")
    args = soak_args(
        "--model", str(model), "--num-requests", "40", "--request-rate", "20", "--max-tokens", "6",
        "--serve-args", "--max-model-len 512 --num-kv-blocks 256",
    )
    report = run_soak_bench(args)
    assert "| unexpected outcomes | 0 |" in report, report
    assert "| KV blocks in use at the end | 0 |" in report
    assert re.search(r"\| requests counted as aborted \(pagedllm:request_aborted_total\) \| [1-9]", report), report
    assert "| /health at the end | 200 |" in report

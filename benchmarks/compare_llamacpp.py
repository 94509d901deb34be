"""pagedllm against llama.cpp (llama-cpp-python built from source) on W4, side by side in one run.

W4 is one request alone: a 128-token prompt, 128 greedy tokens, EOS ignored; TTFT and decode tokens/s,
median of the timed iterations after a warm-up, each iteration with its own prompt. Both engines load
the same GGUF file (by default pagedllm's default model, the Q4_1 GGUF of SmolLM2-135M-Instruct) with
the same number of threads and get the same token-id prompts (pagedllm's W4 prompts, built from the
file's tokenizer as ``pagedllm bench latency`` builds them). The steps run one after another, never
together; ``--rounds 2`` alternates them twice, so that a disturbance shows as a difference between
rounds. pagedllm runs float32, reading the file's quantized blocks in single-stream steps
(``quantization=auto``); ``--int8-activations`` adds a run with its activations rounded to int8 as llama.cpp
rounds them (the gguf option ``int8_activations``), ``--dense`` one on its dense weights only, and ``--eager``
each of those again with ``--enforce-eager`` (the layers one by one from Python instead of the decoder program).

Run it from pagedllm's venv after ``bash benchmarks/llamacpp/setup.sh``, on a quiet machine:

    .venv/bin/python benchmarks/compare_llamacpp.py --write-docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from compare_vllm_cpu import Runner, latency_figures

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "llamacpp"
LLAMA_VENV = HERE / ".venv"
DOCS_SECTION = "llamacpp-compare"


def w4_prompts(model: Path, num_prompts: int, seed: int) -> list[list[int]]:
    """pagedllm's W4 prompts for ``model``: random token ids of its vocabulary, special tokens left out."""
    from transformers import AutoTokenizer

    from pagedllm_core.bench.workloads import latency_workload

    tokenizer = AutoTokenizer.from_pretrained(model.parent, gguf_file=model.name)
    return latency_workload(len(tokenizer), tokenizer.all_special_ids, seed=seed, num_prompts=num_prompts).prompts


def build_markdown(args, rounds: list[dict], llama_info: dict, commands: list[str], prompts_sha256: str) -> str:
    """The side-by-side table per round, then the settings and the exact commands."""
    from pagedllm_core.bench.docs_section import cpu_name  # importable once main() put the repository on sys.path

    lines = [
        f"pagedllm against llama.cpp (llama-cpp-python {llama_info['llama_cpp_python_version']}, built from source) "
        f"in one run on {cpu_name()} ({os.cpu_count()} cores), {args.threads} thread{'s' if args.threads > 1 else ''} "
        "each: W4, one request of "
        f"128 prompt tokens and 128 greedy output tokens (EOS ignored), p50 of {args.num_iters} after "
        f"{args.num_warmup} warm-up, the same token-id prompts, the same GGUF file ({args.model_label}).",
        "",
        "| round | engine, weights | TTFT p50 (ms) | decode tok/s p50 | decode, ours / llama.cpp "
        "| TTFT, ours / llama.cpp |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for index, results in enumerate(rounds, 1):
        theirs = results["llama.cpp"]
        for name, figures in results.items():
            decode, ttft = figures["decode_tokens_per_s_median"], figures["ttft_median_ms"]
            ratios = ["-", "-"] if name == "llama.cpp" else [
                f"{decode / theirs['decode_tokens_per_s_median']:.2f}x", f"{ttft / theirs['ttft_median_ms']:.2f}x"]
            lines.append(f"| {index} | {name} | {ttft:.1f} | {decode:.1f} | " + " | ".join(ratios) + " |")
    lines += [
        "",
        "Settings:",
        f"- llama.cpp: n_threads = n_threads_batch = {args.threads}, n_ctx = n_batch = prompt + output tokens, greedy "
        f"sampling (`temp=0`) through `Llama.generate`; built for this CPU: {llama_info['system_info']}",
        f"- pagedllm: `pagedllm bench latency --no-baseline`, float32, `--num-cpu-threads {args.threads}`, its "
        "defaults otherwise (`quantization=auto`: the file's Q4_0/Q4_1/Q8_0/K-quant blocks, in every step where "
        "its kernel is built with AVX-512 and in steps of up to 64 rows elsewhere, [quantization](quantization.md)); "
        "\"int8 activations\" adds `--plugin-options "
        "'{\"quantization\": {\"int8_activations\": true}}'`, which rounds each group of 32 activations to int8 "
        "and multiplies in integers, as llama.cpp does; \"layers from Python\" adds `--enforce-eager`, which runs "
        "every decode step layer by layer instead of the decoder program ([models](models.md#decode-steps-in-one-c-call)).",
        f"- Prompts: pagedllm's W4 for the file's tokenizer (sha256 prefix {prompts_sha256}).",
        "",
        "Commands, in the order run:",
        "",
        "```",
        *commands,
        "```",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="pagedllm against llama.cpp on W4, one after the other")
    parser.add_argument("--model", type=Path, default=None, help="the GGUF file (default: the default model's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads of each engine (default: all cores)")
    parser.add_argument("--num-iters", type=int, default=5, help="W4 timed iterations (default: 5)")
    parser.add_argument("--num-warmup", type=int, default=1, help="W4 untimed iterations (default: 1)")
    parser.add_argument("--rounds", type=int, default=1, help="times to run both, alternating (default: 1)")
    parser.add_argument("--int8-activations", action="store_true",
                        help="also run pagedllm with the gguf option int8_activations (llama.cpp's arithmetic)")
    parser.add_argument("--dense", action="store_true", help="also run pagedllm on dense weights only")
    parser.add_argument("--eager", action="store_true",
                        help="also run each pagedllm configuration with --enforce-eager (its layers one by one from "
                             "Python, not the decoder program)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench_out" / "llamacpp_compare",
                        help="logs and results.json (default: bench_out/llamacpp_compare)")
    parser.add_argument("--write-docs", type=Path, default=None, help="write the table into this file's section")
    parser.add_argument("--docs-section", default=DOCS_SECTION,
                        help=f"name of that section (default: {DOCS_SECTION})")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.model is None:
        from pagedllm_core.model.source import default_model_source

        source = default_model_source()
        args.model = source.directory / source.gguf_file
        args.model_label = f"the default model, {source.gguf_file}"
    else:
        args.model_label = args.model.name
    args.model = args.model.resolve()
    if not (LLAMA_VENV / "bin" / "python").is_file():
        raise SystemExit("llama-cpp-python's venv is missing; run benchmarks/llamacpp/setup.sh first")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    prompts = w4_prompts(args.model, args.num_warmup + args.num_iters, seed=0)
    prompts_file = args.out_dir / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    prompts_sha256 = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]

    runner = Runner(args.out_dir)
    ours_bin = str(Path(sys.executable).parent / "pagedllm")
    ours_flags = ["bench", "latency", "--no-baseline", "--model", str(args.model), "--dtype", "float32",
                  "--num-iters", str(args.num_iters), "--num-warmup", str(args.num_warmup),
                  "--num-cpu-threads", str(args.threads)]
    # the table's label -> (the step's log name, extra flags)
    ours_runs = {"pagedllm, the file's blocks": ("pagedllm", [])}
    if args.int8_activations:
        ours_runs["pagedllm, the file's blocks, int8 activations"] = (
            "pagedllm-int8", ["--plugin-options", json.dumps({"quantization": {"int8_activations": True}})])
    if args.dense:
        ours_runs["pagedllm, dense float32"] = ("pagedllm-dense", ["--quantization", "none"])
    if args.eager:
        for label, (name, flags) in list(ours_runs.items()):
            ours_runs[f"{label}, layers from Python"] = (f"{name}-eager", [*flags, "--enforce-eager"])
    rounds, llama_info = [], {}
    for index in range(1, args.rounds + 1):
        results = {}
        out = args.out_dir / f"llamacpp-{index}.json"
        runner.run(f"llamacpp-{index}", [
            str(LLAMA_VENV / "bin" / "python"), str(HERE / "run_llamacpp.py"), "--model", str(args.model),
            "--prompts", str(prompts_file), "--num-warmup", str(args.num_warmup), "--threads", str(args.threads),
            "--json", str(out),
        ])
        llama_info = json.loads(out.read_text())
        results["llama.cpp"] = {"ttft_median_ms": llama_info["ttft_median_s"] * 1e3,
                                "decode_tokens_per_s_median": llama_info["decode_tokens_per_s_median"]}
        for name, (step, extra) in ours_runs.items():
            results[name] = latency_figures(runner.run(f"{step}-{index}", [ours_bin, *ours_flags, *extra]))
        rounds.append(results)

    (args.out_dir / "results.json").write_text(json.dumps(
        {"rounds": rounds, "llama_cpp": llama_info, "commands": runner.commands, "prompts_sha256": prompts_sha256},
        indent=2) + "\n")
    markdown = build_markdown(args, rounds, llama_info, runner.commands, prompts_sha256)
    print("\n" + markdown)
    if args.write_docs:
        from pagedllm_core.bench.docs_section import write_section

        write_section(args.write_docs, args.docs_section, markdown)


if __name__ == "__main__":
    main()

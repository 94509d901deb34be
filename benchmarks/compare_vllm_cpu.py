"""pagedllm against vLLM's CPU build, side by side in one run: W1 and W4 (W3 with ``--serve``, start-up
with ``--startup``).

Every step runs alone, one after another (the machine has two cores): vLLM in each of its CPU
configurations (``tuned``: the documented tuning, both cores for the model, tcmalloc and Intel OpenMP
preloaded; ``default``: vLLM's defaults, one core for the model and one kept for its front end), then
pagedllm through its own benchmark commands, on the same converted model, dtype, KV cache budget and
prompts. The table gives every figure as a ratio ours/vLLM measured in this run.

Start-up (``--startup``) is timed from just before a fresh process is launched: the OpenAI server
until its first 200 on ``/health`` (``python -m vllm.entrypoints.openai.api_server`` against
``pagedllm serve``), and a script's ``LLM()`` until its first generated token (``run_vllm.py
--first-token`` against ``pagedllm bench startup``'s script). vLLM runs in its ``--startup-mode``
configuration. Each engine first starts once of each kind untimed, so that every timed start is warm
(compile caches filled by an earlier start in this run); vLLM still compiles its model with inductor
at every start, from those caches. The figures are the medians of ``--startup-runs`` warm starts.

Run it from pagedllm's venv after ``benchmarks/vllm_cpu/setup.sh``:

    .venv/bin/python benchmarks/compare_vllm_cpu.py --serve --startup --write-docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "vllm_cpu"
VLLM_VENV = HERE / ".venv"
DOCS_SECTION = "vllm-compare"
TCMALLOC = "/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
SERVER_START_TIMEOUT_S = 1200  # vLLM compiles its model with inductor on a cold cache (minutes on 2 cores)
OURS_STARTUP_ROWS = {  # `pagedllm bench startup`'s row for each start-up figure
    "serve_to_health_s": "`pagedllm serve` to the first 200 on /health",
    "llm_to_first_token_s": "`LLM()` to its first token",
}


@dataclass(frozen=True)
class VllmMode:
    """One vLLM CPU configuration: its name and the environment it runs under."""

    name: str
    description: str
    env: dict[str, str]


def vllm_modes(kv_cache_gib: int, num_cpus: int) -> dict[str, VllmMode]:
    """vLLM's two CPU configurations of the issue; both get the same KV cache budget as pagedllm."""
    kv = {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}
    preload = [path for path in (TCMALLOC, str(VLLM_VENV / "lib" / "libiomp5.so")) if Path(path).is_file()]
    tuned_env = {**kv, "VLLM_CPU_OMP_THREADS_BIND": f"0-{num_cpus - 1}", "LD_PRELOAD": ":".join(preload)}
    return {
        "tuned": VllmMode(
            "tuned",
            f"{num_cpus} OpenMP threads bound to cores 0-{num_cpus - 1}, LD_PRELOAD "
            + (" + ".join(Path(path).name for path in preload) or "none found"),
            tuned_env,
        ),
        "default": VllmMode(
            "default",
            "vLLM's defaults: VLLM_CPU_OMP_THREADS_BIND=auto (one core for the model, one reserved), "
            "vLLM's own libgomp preload",
            kv,
        ),
    }


def parse_markdown_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in ``text`` as rows of cells (header first, separator dropped)."""
    tables, current = [], []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            cells = [cell.strip() for cell in line[1:-1].split("|")]
            if not all(set(cell) <= set("-: ") for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def table_cell(text: str, header: str, row: str, column: str) -> str:
    """The cell at ``row`` (first cell) and ``column`` of the table whose first header cell is ``header``."""
    for table in parse_markdown_tables(text):
        if table[0][0] != header or column not in table[0]:
            continue
        index = table[0].index(column)
        for cells in table[1:]:
            if cells[0] == row:
                return cells[index]
    raise ValueError(f"no cell ({row!r}, {column!r}) in a table headed {header!r} in:\n{text}")


def serve_figures(text: str, rates: list[str]) -> dict[str, dict[str, float]]:
    """Per rate: output tok/s, mean TTFT and median inter-token latency (ms) from ``bench serve``'s table."""
    figures = {}
    for rate in rates:
        column = f"rate {rate}/s"
        ttft = table_cell(text, "metric", "TTFT mean / p50 / p99 (ms)", column).split(" / ")
        itl = table_cell(text, "metric", "ITL mean / p50 / p99 (ms)", column).split(" / ")
        figures[rate] = {
            "output_tokens_per_s": float(table_cell(text, "metric", "output throughput (tok/s)", column)),
            "ttft_mean_ms": float(ttft[0]),
            "itl_median_ms": float(itl[1]),
            "successful": table_cell(text, "metric", "successful requests", column),
        }
    return figures


class Runner:
    """Runs each step in turn, logging its command and output under ``out_dir``."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.commands: list[str] = []

    def _record(self, command: list[str], env: dict[str, str], background: bool = False) -> str:
        """The command line as shown; added to ``commands`` unless it repeats the one before (repeated starts)."""
        shown = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
        shown = (shown + " " if shown else "") + shlex.join(_relative(command)) + (" &" if background else "")
        if not self.commands or self.commands[-1] != shown:
            self.commands.append(shown)
        return shown

    def run(self, name: str, command: list[str], env: dict[str, str] | None = None) -> str:
        shown = self._record(command, env or {})
        print(f"\n== {name}: {shown}", flush=True)
        began = time.perf_counter()
        # Written as the step runs, so that a long step can be followed with tail -f.
        out, log = self.out_dir / f"{name}.out", self.out_dir / f"{name}.log"
        with out.open("w") as stdout, log.open("w") as stderr:
            returncode = subprocess.run(
                command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=stdout, stderr=stderr
            ).returncode
        if returncode != 0:
            raise SystemExit(f"{name} failed (exit {returncode}); see {log}:\n{log.read_text()[-3000:]}")
        print(f"   done in {time.perf_counter() - began:.0f} s (output {out}, log {log})", flush=True)
        return out.read_text()

    def serve(self, name: str, server: list[str], env: dict[str, str], port: int, client: list[str]) -> str:
        """Start ``server``, wait until it answers, run ``client`` against it, stop the server."""
        print(f"\n== {name} server: {self._record(server, env, background=True)}", flush=True)
        log = (self.out_dir / f"{name}-server.log").open("w")
        process = subprocess.Popen(
            server, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_until_serving(process, port)
            return self.run(name, client)
        finally:
            _stop(process)
            log.close()

    def time_start(self, name: str, server: list[str], env: dict[str, str], port: int) -> float:
        """Seconds from just before ``server`` is launched until its first 200 on ``/health``; stops it then."""
        print(f"\n== {name}: {self._record(server, env, background=True)}", flush=True)
        with (self.out_dir / f"{name}.log").open("w") as log:
            began = time.time()
            process = subprocess.Popen(server, cwd=ROOT, env={**os.environ, **env}, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                _wait_until_serving(process, port, path="/health", interval_s=0.2)
                seconds = time.time() - began
            finally:
                _stop(process)
        print(f"   healthy after {seconds:.1f} s", flush=True)
        return seconds


def _relative(command: list[str]) -> list[str]:
    return [os.path.relpath(part, ROOT) if part.startswith(str(ROOT)) else part for part in command]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(process: subprocess.Popen, port: int, path: str = "/v1/models", interval_s: float = 2) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before serving; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(interval_s)
    raise SystemExit(f"the server did not answer on port {port} within {SERVER_START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server we started, and the worker processes it started in its own session."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ours_prompts_fingerprints(model: Path, num_prompts: int, num_iters: int, num_warmup: int, seed: int) -> dict:
    """The fingerprints of pagedllm's W1 and W4 prompts from the model directory's tokenizer, as
    ``pagedllm bench`` builds them, to check that vLLM was given the same prompts."""
    from transformers import AutoTokenizer

    from pagedllm_core.bench.workloads import latency_workload, throughput_workload

    tokenizer = AutoTokenizer.from_pretrained(model)
    vocab_size, special_ids = len(tokenizer), tokenizer.all_special_ids
    w1 = throughput_workload(vocab_size, special_ids, num_prompts=num_prompts, seed=seed)
    w4 = latency_workload(vocab_size, special_ids, seed=seed, num_prompts=num_warmup + num_iters)
    return {
        "W1": hashlib.sha256(json.dumps(w1.prompts).encode()).hexdigest()[:16],
        "W4": hashlib.sha256(json.dumps(w4.prompts).encode()).hexdigest()[:16],
    }


def startup_figures(text: str) -> dict[str, dict]:
    """Per start-up figure: the warm starts and their median (s) from ``pagedllm bench startup``'s table,
    whose first round is the untimed warm-up start."""
    figures = {}
    for key, row in OURS_STARTUP_ROWS.items():
        warm = [float(value) for value in table_cell(text, "measurement", row, "warm rounds (s)").split(", ")]
        figures[key] = {
            "warmup_s": float(table_cell(text, "measurement", row, "round 1 (s)")),
            "runs_s": warm,
            "median_s": float(table_cell(text, "measurement", row, "warm median (s)")),
        }
    return figures


def latency_figures(text: str) -> dict[str, float]:
    """TTFT and decode speed from ``pagedllm bench latency``'s table."""
    return {
        "ttft_median_ms": float(table_cell(text, "system", "pagedllm", "TTFT p50 (ms)")),
        "decode_tokens_per_s_median": float(table_cell(text, "system", "pagedllm", "decode tok/s p50")),
    }


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def _startup_note(args, results: dict) -> str:
    ours, theirs = results["pagedllm"]["startup"], results["vllm"][args.startup_mode]["startup"]
    warmup = "; ".join(
        f"{name} {figures['serve_to_health_s']['warmup_s']:.1f} s to /health, "
        f"{figures['llm_to_first_token_s']['warmup_s']:.1f} s to LLM()'s first token"
        for name, figures in (("vLLM", theirs), ("pagedllm", ours))
    )
    return (
        "- Start-up: seconds from just before a fresh process is launched (Python's and torch's imports count); "
        "the server until its first 200 on /health, `LLM()` with its defaults until one generated token of one "
        "short prompt. vLLM in its "
        f"{args.startup_mode} configuration through `run_vllm.py --first-token` and its OpenAI server module, "
        "pagedllm through `pagedllm bench startup`. Every timed start is warm: each engine first started once of "
        f"each kind, untimed ({warmup}; those are cold starts when the compile caches were empty before this run). "
        "vLLM compiles its model with inductor at every start, reading the kernels the earlier starts cached "
        "(its first start after a cache wipe takes minutes longer)."
    )


def build_markdown(args, results: dict, modes: list[VllmMode], commands: list[str]) -> str:
    """The side-by-side table, then the settings and the exact commands that produced it."""
    vllm = results["vllm"]
    modes = [mode for mode in modes if mode.name in vllm] + [
        mode for mode in vllm_modes(args.kv_cache_gib, os.cpu_count() or 1).values()
        if mode.name in vllm and mode not in modes
    ]
    first = next(vllm[mode.name] for mode in modes if "vllm_version" in vllm[mode.name])
    ours = results["pagedllm"]
    header = "| workload | metric | better | pagedllm | " + " | ".join(
        f"vLLM {mode.name} | ours / vLLM {mode.name}" for mode in modes
    ) + " |"
    lines = [
        f"pagedllm against vLLM {first['vllm_version']} (CPU build, `vllm-cpu`) on the same machine "
        f"in one run: model {args.model_label}, {args.dtype} in both engines, KV cache {args.kv_cache_gib} GiB each, "
        "the same token-id prompts (EOS ignored, greedy). Ratios are ours / vLLM, so above 1 means pagedllm is "
        "ahead for higher-is-better figures and behind for lower-is-better ones.",
        "",
        header,
        "| --- | --- | --- | ---: |" + " ---: | ---: |" * len(modes),
    ]

    def row(workload: str, metric: str, better: str, ours_value: float, pick, fmt: str) -> None:
        cells = [workload, metric, better, format(ours_value, fmt)]
        for mode in modes:
            theirs = pick(vllm[mode.name])
            cells += ["-", "-"] if theirs is None else [format(theirs, fmt), _ratio(ours_value, theirs)]
        lines.append("| " + " | ".join(cells) + " |")

    if "W1" in ours:
        row(f"W1 ({args.num_prompts} requests)", "output tok/s", "higher", ours["W1"]["output_tokens_per_s"],
            lambda r: r.get("W1", {}).get("output_tokens_per_s"), ".1f")
        row("", "elapsed (s)", "lower", ours["W1"]["elapsed_s"], lambda r: r.get("W1", {}).get("elapsed_s"), ".1f")
    if "W4" in ours:
        row(f"W4 (p50 of {args.num_iters})", "TTFT (ms)", "lower", ours["W4"]["ttft_median_ms"],
            lambda r: r["W4"]["ttft_median_s"] * 1e3 if "W4" in r else None, ".1f")
        row("", "decode tok/s", "higher", ours["W4"]["decode_tokens_per_s_median"],
            lambda r: r.get("W4", {}).get("decode_tokens_per_s_median"), ".1f")
    if "W4-gguf" in ours:
        row("W4, pagedllm on the GGUF's blocks", "TTFT (ms)", "lower", ours["W4-gguf"]["ttft_median_ms"],
            lambda r: r["W4"]["ttft_median_s"] * 1e3 if "W4" in r else None, ".1f")
        row("", "decode tok/s", "higher", ours["W4-gguf"]["decode_tokens_per_s_median"],
            lambda r: r.get("W4", {}).get("decode_tokens_per_s_median"), ".1f")
    if "W3" in ours:
        for rate, figures in ours["W3"].items():
            label = f"W3 rate {rate}/s ({args.serve_num_prompts} requests)"
            row(label, "output tok/s", "higher", figures["output_tokens_per_s"],
                lambda r, rate=rate: r.get("W3", {}).get(rate, {}).get("output_tokens_per_s"), ".1f")
            row("", "mean TTFT (ms)", "lower", figures["ttft_mean_ms"],
                lambda r, rate=rate: r.get("W3", {}).get(rate, {}).get("ttft_mean_ms"), ".1f")
            row("", "median inter-token (ms)", "lower", figures["itl_median_ms"],
                lambda r, rate=rate: r.get("W3", {}).get(rate, {}).get("itl_median_ms"), ".1f")
    if "startup" in ours:
        label = f"start-up (median of {args.startup_runs} warm)"
        for key, metric in (("serve_to_health_s", "serve to /health 200 (s)"),
                            ("llm_to_first_token_s", "LLM() to first token (s)")):
            row(label, metric, "lower", ours["startup"][key]["median_s"],
                lambda r, key=key: r.get("startup", {}).get(key, {}).get("median_s"), ".1f")
            label = ""

    lines += [
        "",
        "Settings:",
        f"- vLLM {first['vllm_version']} on torch {first['torch_version']}, dtype {first['dtype']} (asked for "
        f"{args.dtype}), V1 engine with its CPU defaults otherwise (max_num_seqs {first.get('max_num_seqs')}, "
        f"max_num_batched_tokens {first.get('max_num_batched_tokens')}, prefix caching "
        f"{first.get('enable_prefix_caching')})"
        + ("; W1 through `LLM.generate`, W4 through its engine's step loop." if "W1" in ours else "."),
        *(f"- vLLM {mode.name}: {mode.description}." for mode in modes),
        f"- pagedllm: dtype {args.dtype}, KV cache {args.kv_cache_gib} GiB, its defaults otherwise; torch's "
        "default thread count (see the line below the table); W3 through `pagedllm serve` in its own process.",
        "- W4 on the GGUF's blocks: pagedllm loads the default model's Q4_1 GGUF itself, the file the converted "
        "directory was dequantized from (the same weight values), in float32 whatever the dtype of the other rows "
        "(the blocks' kernel takes float32 activations), and its `gguf` quantization reads the blocks in "
        "every step where its kernel is built with AVX-512 (in steps of up to 64 rows elsewhere); vLLM's figures "
        "are those of the converted directory." if "W4-gguf" in ours else
        "- W4 on the GGUF's blocks not run (pass --gguf-w4).",
        "- W3: both servers loaded by the same client, `pagedllm bench serve --dataset random-ids`, "
        f"vLLM in its {args.serve_mode} configuration." if args.serve else "- W3 not run (pass --serve).",
        _startup_note(args, results) if "startup" in ours else "- Start-up not run (pass --startup).",
        f"- Prompts checked equal on both sides (sha256 prefixes {results['prompts_sha256']})." if "W1" in ours else
        "- W1 and W4 not run (--skip-w1-w4).",
        "",
        "Commands, in the order run:",
        "",
        "```",
        *commands,
        "```",
    ]
    return "\n".join(lines)


def vllm_server(vllm_python: str, model: str, dtype: str, port: int) -> list[str]:
    """`vllm serve` through its own server module: the `vllm` command asks for the version of a
    distribution named "vllm" and fails on the CPU build, whose distribution is "vllm-cpu"."""
    return [vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype, "--seed", "0"]


def vllm_startup(runner: Runner, args, vllm_python: str, env: dict[str, str]) -> dict:
    """vLLM's start-up figures: one untimed start of each kind (logs ``...-0``), then ``--startup-runs`` timed
    ones; also the version and settings its ``LLM()`` reported (the table's header reads them)."""
    port = _free_port()
    server = vllm_server(vllm_python, str(args.model), args.dtype, port)
    serve = [runner.time_start(f"vllm-startup-serve-{index}", server, env, port)
             for index in range(args.startup_runs + 1)]
    out = args.out_dir / "vllm-startup-llm.json"
    command = [vllm_python, str(HERE / "run_vllm.py"), "--model", str(args.model), "--dtype", args.dtype,
               "--first-token", "--label", f"vLLM {args.startup_mode}", "--json", str(out)]
    first_token = []
    for index in range(args.startup_runs + 1):
        began = time.time()
        runner.run(f"vllm-startup-llm-{index}", command, env)
        report = json.loads(out.read_text())
        first_token.append(report.pop("first_token_at") - began)
        print(f"   first token after {first_token[-1]:.1f} s", flush=True)
    figures = {key: {"warmup_s": times[0], "runs_s": times[1:], "median_s": statistics.median(times[1:])}
               for key, times in (("serve_to_health_s", serve), ("llm_to_first_token_s", first_token))}
    return {**report, "startup": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description="pagedllm against vLLM's CPU build on W1/W4 (and W3)")
    parser.add_argument("--model", type=Path, default=HERE / "model", help="HF directory both engines load")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype of both engines (default: float32; issue 19 compares bfloat16 on CPUs whose "
                        "lscpu lists amx_bf16 or avx512_bf16)")
    parser.add_argument("--kv-cache-gib", type=int, default=4, help="KV cache of each engine in GiB (default: 4)")
    parser.add_argument("--num-prompts", type=int, default=200, help="W1 requests (default: 200)")
    parser.add_argument("--num-iters", type=int, default=5, help="W4 timed iterations (default: 5)")
    parser.add_argument("--num-warmup", type=int, default=1, help="W4 untimed iterations (default: 1)")
    parser.add_argument("--modes", default="tuned,default", help="vLLM configurations: tuned, default")
    parser.add_argument("--serve", action="store_true", help="also run W3 against both servers (long)")
    parser.add_argument("--serve-mode", default="default", choices=("tuned", "default"),
                        help="vLLM configuration of the W3 server (default: default, as `vllm serve` runs)")
    parser.add_argument("--serve-num-prompts", type=int, default=200, help="W3 requests per rate (default: 200)")
    parser.add_argument("--request-rates", default="inf,4,1", help="W3 rates (default: inf,4,1)")
    parser.add_argument("--startup", action="store_true",
                        help="also time both engines' start-up: server to /health 200, LLM() to first token (long)")
    parser.add_argument("--startup-runs", type=int, default=2,
                        help="timed warm starts of each kind, after one untimed start (default: 2)")
    parser.add_argument("--startup-mode", default="default", choices=("tuned", "default"),
                        help="vLLM configuration of the start-up runs (default: default, as users start it)")
    parser.add_argument("--skip-w1-w4", action="store_true",
                        help="run neither W1 nor W4 (with --startup, and --serve if wanted)")
    parser.add_argument("--gguf-w4", action="store_true",
                        help="also run pagedllm's W4 on the default GGUF file, reading its Q4_1 blocks")
    parser.add_argument("--skip-ours", action="store_true", help="run only vLLM's side (testing the harness)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench_out" / "vllm_compare",
                        help="logs and results.json (default: bench_out/vllm_compare)")
    parser.add_argument("--write-docs", type=Path, default=None, help="write the table into this file's section")
    args = parser.parse_args()
    if args.skip_w1_w4 and not args.startup:
        parser.error("--skip-w1-w4 needs --startup (the vLLM version and settings are read from one of them)")
    if args.startup_runs < 1:
        parser.error("--startup-runs must be at least 1")
    args.model = args.model.resolve()
    args.model_label = "SmolLM2-135M-Instruct (converted from the default GGUF)" if args.model == (
        HERE / "model").resolve() else str(args.model)
    if not (VLLM_VENV / "bin" / "python").is_file() or not (args.model / "config.json").is_file():
        raise SystemExit("vLLM's venv or the converted model is missing; run benchmarks/vllm_cpu/setup.sh first")
    mode_table = vllm_modes(args.kv_cache_gib, os.cpu_count() or 1)
    modes = [mode_table[name.strip()] for name in args.modes.split(",") if name.strip()]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.out_dir)
    ours_bin = str(Path(sys.executable).parent / "pagedllm")
    vllm_python = str(VLLM_VENV / "bin" / "python")
    rates = [rate.strip() for rate in args.request_rates.split(",")]
    model = str(args.model)
    results: dict = {"vllm": {}, "pagedllm": {}}

    for mode in [] if args.skip_w1_w4 else modes:
        out = args.out_dir / f"vllm-{mode.name}.json"
        runner.run(f"vllm-{mode.name}", [
            vllm_python, str(HERE / "run_vllm.py"), "--model", model, "--dtype", args.dtype, "--workloads", "W1,W4",
            "--num-prompts", str(args.num_prompts), "--num-iters", str(args.num_iters),
            "--num-warmup", str(args.num_warmup), "--label", f"vLLM {mode.name}", "--json", str(out),
        ], mode.env)
        results["vllm"][mode.name] = json.loads(out.read_text())

    engine_flags = ["--model", model, "--dtype", args.dtype, "--kv-cache-memory", f"{args.kv_cache_gib}GiB"]
    if not args.skip_ours and not args.skip_w1_w4:
        text = runner.run("pagedllm-W1", [
            ours_bin, "bench", "throughput", "--num-prompts", str(args.num_prompts), "--no-baseline", *engine_flags,
        ])
        results["pagedllm"]["W1"] = {
            "output_tokens_per_s": float(table_cell(text, "system", "pagedllm", "output tok/s")),
            "elapsed_s": float(table_cell(text, "system", "pagedllm", "elapsed (s)")),
        }
        text = runner.run("pagedllm-W4", [
            ours_bin, "bench", "latency", "--num-iters", str(args.num_iters), "--num-warmup", str(args.num_warmup),
            "--no-baseline", *engine_flags,
        ])
        results["pagedllm"]["W4"] = latency_figures(text)
        if args.gguf_w4:
            # float32 whatever --dtype: the blocks' kernel takes float32 activations, and with a half dtype the
            # engine would dequantize the blocks into dense weights instead.
            text = runner.run("pagedllm-W4-gguf", [
                ours_bin, "bench", "latency", "--num-iters", str(args.num_iters), "--num-warmup", str(args.num_warmup),
                "--no-baseline", "--dtype", "float32", "--kv-cache-memory", f"{args.kv_cache_gib}GiB",
            ])
            results["pagedllm"]["W4-gguf"] = latency_figures(text)

    if args.serve:
        client = [ours_bin, "bench", "serve", "--dataset", "random-ids", "--model", model,
                  "--num-prompts", str(args.serve_num_prompts), "--request-rates", ",".join(rates),
                  "--input-len", "256", "--output-len", "128"]
        port = _free_port()
        text = runner.serve("vllm-W3", vllm_server(vllm_python, model, args.dtype, port),
                            mode_table[args.serve_mode].env, port, [*client, "--base-url", f"http://127.0.0.1:{port}"])
        results["vllm"].setdefault(args.serve_mode, {})["W3"] = serve_figures(text, rates)
        if not args.skip_ours:
            port = _free_port()
            text = runner.serve("pagedllm-W3", [
                ours_bin, "serve", "--host", "127.0.0.1", "--port", str(port), "--uvicorn-log-level", "warning",
                *engine_flags,
            ], {}, port, [*client, "--base-url", f"http://127.0.0.1:{port}"])
            results["pagedllm"]["W3"] = serve_figures(text, rates)

    if args.startup:
        startup = vllm_startup(runner, args, vllm_python, mode_table[args.startup_mode].env)
        results["vllm"][args.startup_mode] = {**startup, **results["vllm"].get(args.startup_mode, {})}
        if not args.skip_ours:
            text = runner.run("pagedllm-startup", [
                ours_bin, "bench", "startup", "--model", model, "--dtype", args.dtype,
                "--kv-cache-memory", f"{args.kv_cache_gib}GiB", "--num-rounds", str(args.startup_runs + 1),
                "--timeout", str(SERVER_START_TIMEOUT_S),
            ])
            results["pagedllm"]["startup"] = startup_figures(text)

    theirs = {name: results["vllm"].get(mode.name, {}).get(name, {}).get("prompts_sha256") for mode in modes
              for name in ("W1", "W4")}
    mine = ours_prompts_fingerprints(args.model, args.num_prompts, args.num_iters, args.num_warmup, 0)
    if any(theirs[name] not in (None, mine[name]) for name in mine):
        raise SystemExit(f"vLLM was given other prompts than pagedllm: {theirs} against {mine}")
    results["prompts_sha256"] = ", ".join(f"{name} {value}" for name, value in mine.items())
    results["commands"] = runner.commands
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.skip_ours:
        print(json.dumps(results, indent=2))
        return
    markdown = build_markdown(args, results, modes, runner.commands)
    print("\n" + markdown)
    if args.write_docs:
        sys.path.insert(0, str(ROOT))
        from pagedllm_core.bench.docs_section import write_section

        write_section(args.write_docs, DOCS_SECTION, markdown)


if __name__ == "__main__":
    main()

"""The ``pagedllm`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args
from pagedllm_core.entrypoints.quantize_command import add_quantize_parser
from pagedllm_core.errors import PagedLLMError
from pagedllm_core.server.cli import add_serve_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagedllm", description="LLM inference with PagedAttention.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the OpenAI-compatible API (default model when MODEL is omitted)")
    add_serve_arguments(serve)
    serve.set_defaults(handler=_run_serve)

    plugins = commands.add_parser("plugins", help="list installed plugins, what they register, and load errors")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of text")
    plugins.set_defaults(handler=_run_plugins)

    generate = commands.add_parser("generate", help="generate offline for prompts given as arguments")
    generate.add_argument("prompts", nargs="+", help="prompt texts")
    _add_sampling_arguments(generate)
    add_engine_arguments(generate)
    generate.set_defaults(handler=_run_generate)

    chat = commands.add_parser("chat", help="answer one user message with the model's chat template")
    chat.add_argument("message", help="the user's message")
    chat.add_argument("--system", default=None, help="an optional system message")
    _add_sampling_arguments(chat)
    add_engine_arguments(chat)
    chat.set_defaults(handler=_run_chat)

    _add_bench_parser(commands)
    add_quantize_parser(commands)
    return parser


# name -> (help, "module:add_arguments", "module:run"); each run returns a markdown table.
BENCHMARKS = {
    "sharing": (
        "KV blocks saved by sharing in parallel sampling and beam search",
        "pagedllm_core.bench.sharing:add_sharing_arguments",
        "pagedllm_core.bench.sharing:run_sharing_bench",
    ),
    "serve": (
        "an OpenAI-compatible server under Poisson load: throughput, TTFT, inter-token latency",
        "pagedllm_core.bench.serve:add_serve_bench_arguments",
        "pagedllm_core.bench.serve:run_serve_bench",
    ),
    "attention": (
        "attention backends' kernels on decode and prefill shapes",
        "pagedllm_core.bench.attention:add_attention_arguments",
        "pagedllm_core.bench.attention:run_attention_bench",
    ),
    "guided": (
        "structured outputs: first and cached compile time, mask time per step, tok/s with and without a schema",
        "pagedllm_core.bench.guided:add_guided_arguments",
        "pagedllm_core.bench.guided:run_guided_bench",
    ),
    "throughput": (
        "W1 offline throughput, with transformers' static batches as the baseline, roofline and KV waste",
        "pagedllm_core.bench.throughput:add_throughput_arguments",
        "pagedllm_core.bench.throughput:run_throughput_bench",
    ),
    "step": (
        "the engine's time per decode step outside the model (schedule, inputs, sampling, outputs) at 1-256 sequences",
        "pagedllm_core.bench.step:add_step_arguments",
        "pagedllm_core.bench.step:run_step_bench",
    ),
    "embed": (
        "embedding throughput of LLM.embed, with sentence-transformers as the baseline",
        "pagedllm_core.bench.embed:add_embed_arguments",
        "pagedllm_core.bench.embed:run_embed_bench",
    ),
    "soak": (
        "a long mixed load (streams, n>1, structured, aborted, invalid) against a server it starts: errors by kind, "
        "KV blocks left in use, server RSS over time",
        "pagedllm_core.bench.soak:add_soak_arguments",
        "pagedllm_core.bench.soak:run_soak_bench",
    ),
    "lora": (
        "W1-style throughput with 0, 1, 4 and 16 distinct LoRA adapters in the batch (needs pagedllm[lora])",
        "pagedllm_core.bench.lora:add_lora_bench_arguments",
        "pagedllm_core.bench.lora:run_lora_bench",
    ),
    "startup": (
        "seconds from a fresh process to the first 200 on /health (pagedllm serve) and to LLM()'s first token",
        "pagedllm_core.bench.startup:add_startup_arguments",
        "pagedllm_core.bench.startup:run_startup_bench",
    ),
    "tp": (
        "W4 and W1 at several tensor-parallel sizes side by side, and the collectives' cost per decode step",
        "pagedllm_core.bench.tensor_parallel:add_tp_arguments",
        "pagedllm_core.bench.tensor_parallel:run_tp_bench",
    ),
    "latency": (
        "W4 single stream: time to first token and decode tokens/s, with transformers as the baseline",
        "pagedllm_core.bench.latency:add_latency_arguments",
        "pagedllm_core.bench.latency:run_latency_bench",
    ),
}


def _add_bench_parser(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print markdown tables")
    kinds = bench.add_subparsers(dest="benchmark", required=True)
    for name, (help_text, add_arguments, _) in BENCHMARKS.items():
        parser = kinds.add_parser(name, help=help_text)
        parser.add_argument(
            "--write-docs", metavar="PATH", default=None,
            help="also write the table into its section of this markdown file (e.g. docs/benchmarks.md)",
        )
        _load(add_arguments)(parser)
        parser.set_defaults(handler=_run_bench)


def _load(path: str):
    import importlib

    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _run_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pagedllm_core.bench.docs_section import write_section

    table = _load(BENCHMARKS[args.benchmark][2])(args)
    print(table)
    if args.write_docs:
        write_section(Path(args.write_docs), args.benchmark, table)


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--max-tokens", type=int, default=64)
    group.add_argument("--temperature", type=float, default=0.0)
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--top-k", type=int, default=0)
    group.add_argument("--sampling-seed", type=int, default=None, help="per-request seed")


def _sampling_params(args: argparse.Namespace):
    from pagedllm_core.sampling_params import SamplingParams

    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.sampling_seed,
    )


def _run_serve(args: argparse.Namespace) -> None:
    from pagedllm_core.server.cli import run_server

    run_server(args)


def _run_plugins(args: argparse.Namespace) -> None:
    from pagedllm_core.entrypoints.plugins_command import print_plugins_listing

    print_plugins_listing(as_json=args.json)


def _run_generate(args: argparse.Namespace) -> None:
    from pagedllm_core.entrypoints.llm import LLM

    llm = LLM(**engine_settings_from_args(args))
    for output in llm.generate(args.prompts, _sampling_params(args), use_tqdm=False):
        print(f"--- {output.prompt!r}\n{output.outputs[0].text}")


def _run_chat(args: argparse.Namespace) -> None:
    from pagedllm_core.entrypoints.llm import LLM

    llm = LLM(**engine_settings_from_args(args))
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.message})
    (output,) = llm.chat(messages, _sampling_params(args), use_tqdm=False)
    print(output.outputs[0].text)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except PagedLLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

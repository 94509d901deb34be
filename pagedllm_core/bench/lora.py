"""``pagedllm bench lora``: W1-style offline throughput with 0, 1, 4 and 16 distinct LoRA adapters in the batch.

One engine (``enable_lora``, ``max_loras`` = the most adapters asked for) runs the same workload of
random-token prompts once per adapter count: requests take the adapters round-robin (0: the base
model through the same wrapped layers). The adapters are random, of the ranks given in turn (8 and
16 by default), on every projection (q/k/v/o, gate/up/down), written in peft's format to a
temporary directory. The S-LoRA goal: many distinct adapters keep most of one adapter's throughput.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from pagedllm_core.bench.workloads import throughput_workload
from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-prompts", type=int, default=64, help="requests in the workload")
    parser.add_argument("--input-len", type=int, nargs=2, default=(64, 256), metavar=("MIN", "MAX"),
                        help="prompt lengths, uniform in [MIN, MAX]")
    parser.add_argument("--output-len", type=int, default=64, help="tokens each request generates")
    parser.add_argument("--adapter-counts", default="0,1,4,16", help="distinct adapters in the batch, one run each")
    parser.add_argument("--ranks", default="8,16", help="ranks the adapters take in turn")
    parser.add_argument("--num-iters", type=int, default=1,
                        help="timed rounds over all the adapter counts, one after the other (so every count sees "
                             "the same changes of load); each row reports its fastest round")
    parser.add_argument("--plot", default=None, metavar="PNG", help="also draw the throughputs as a bar chart")
    add_engine_arguments(parser)


def write_random_adapter(directory: Path, hf_config, rank: int, seed: int) -> Path:
    """A random peft-format LoRA adapter of ``rank`` on every projection of a Llama-style ``hf_config``."""
    from safetensors.torch import save_file

    from pagedllm_core.model.attention_shape import attention_shape

    shape = attention_shape(hf_config)
    hidden, intermediate = hf_config.hidden_size, hf_config.intermediate_size
    q_size, kv_size = shape.num_heads * shape.head_size, shape.num_kv_heads * shape.head_size
    sizes = {  # projection -> (in, out)
        "self_attn.q_proj": (hidden, q_size), "self_attn.k_proj": (hidden, kv_size),
        "self_attn.v_proj": (hidden, kv_size), "self_attn.o_proj": (q_size, hidden),
        "mlp.gate_proj": (hidden, intermediate), "mlp.up_proj": (hidden, intermediate),
        "mlp.down_proj": (intermediate, hidden),
    }
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(shape.num_layers):
        for name, (in_features, out_features) in sizes.items():
            prefix = f"base_model.model.model.layers.{layer}.{name}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) / in_features**0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * 0.01
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
              "target_modules": list(LLAMA_TARGETS), "bias": "none"}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def run_lora_bench(args: argparse.Namespace) -> str:
    from pagedllm_core.entrypoints.llm import LLM
    from pagedllm_core.lora_request import LoRARequest
    from pagedllm_core.sampling_params import SamplingParams

    counts = [int(count) for count in args.adapter_counts.split(",")]
    ranks = [int(rank) for rank in args.ranks.split(",")]
    settings = {"enable_lora": True, "max_loras": max(max(counts), 1), "max_lora_rank": max(ranks),
                **engine_settings_from_args(args)}
    llm = LLM(**settings)
    engine = llm.llm_engine
    tokenizer = engine.tokenizer
    workload = throughput_workload(len(tokenizer), tokenizer.all_special_ids, num_prompts=args.num_prompts,
                                   min_input_len=args.input_len[0], max_input_len=args.input_len[1],
                                   output_len=args.output_len)
    prompts = [{"prompt_token_ids": prompt} for prompt in workload.prompts]
    params = SamplingParams(temperature=0.0, max_tokens=workload.output_len, ignore_eos=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pagedllm-bench-lora-") as root:
        adapters = [
            LoRARequest(f"random-{index}", index + 1,
                        str(write_random_adapter(Path(root) / str(index), engine.model_info.hf_config,
                                                 ranks[index % len(ranks)], seed=index)))
            for index in range(max(counts))
        ]
        llm.generate(prompts[:2], SamplingParams(max_tokens=4), use_tqdm=False,
                     lora_request=adapters[0] if adapters else None)  # warm-up
        fastest: dict[int, float] = {}
        for _ in range(args.num_iters):
            for count in counts:
                loras = [adapters[index % count] if count else None for index in range(len(prompts))]
                for lora in {lora for lora in loras if lora is not None}:
                    engine.add_lora(lora)  # loading from disk is not what is measured
                start = time.perf_counter()
                outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=loras)
                elapsed = time.perf_counter() - start
                fastest[count] = min(elapsed, fastest.get(count, elapsed))
        num_tokens = sum(len(output.outputs[0].token_ids) for output in outputs)  # the same in every run
        for count in counts:
            used_ranks = sorted({ranks[index % len(ranks)] for index in range(min(count, len(prompts)))})
            rows.append((count, used_ranks, num_tokens / fastest[count], fastest[count]))
    single = next((row[2] for row in rows if row[0] == 1), None)
    lines = [
        f"LoRA throughput: {len(prompts)} requests, prompts of {args.input_len[0]}-{args.input_len[1]} random tokens, "
        f"{workload.output_len} output tokens each, one engine with max_loras={settings['max_loras']}, "
        f"max_lora_rank={settings['max_lora_rank']}; adapters on every projection, taken round-robin"
        + (f"; fastest of {args.num_iters} interleaved rounds." if args.num_iters > 1 else "."),
        "",
        "| distinct adapters in the batch | ranks | output tok/s | seconds | vs 1 adapter |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for count, used_ranks, tokens_per_second, elapsed in rows:
        ratio = f"{tokens_per_second / single:.0%}" if single else "-"
        rank_text = ", ".join(map(str, used_ranks)) or "- (base model)"
        lines.append(f"| {count} | {rank_text} | {tokens_per_second:,.1f} | {elapsed:.1f} | {ratio} |")
    if args.plot:
        from pagedllm_core.bench.plots import bar_chart, markdown_image

        bar_chart(args.plot, "LoRA: output tokens/s by distinct adapters in the batch",
                  {"output tok/s": {f"{row[0]} adapters": row[2] for row in rows}})
        lines += ["", markdown_image(args.plot, getattr(args, "write_docs", None), "LoRA throughput by adapter count")]
    return "\n".join(lines)

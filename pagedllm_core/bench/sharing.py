"""``pagedllm bench sharing``: KV blocks saved by sharing, for parallel sampling and beam search.

Without sharing, every sequence would hold its own copy of each block in its block table; with
sharing, forked sequences reference the prompt's blocks (and beams their common prefix) once.
The saving is ``1 - physical blocks / referenced blocks``, summed over every step of the run, as
the PagedAttention paper measures it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args

# Instructions in the style of the Alpaca set the paper used, sent through the chat template.
INSTRUCTIONS = [
    "Give three tips for staying healthy.",
    "Explain why the sky is blue to a ten-year-old.",
    "Write a short poem about a lighthouse keeper who collects storms.",
    "Describe the difference between a list and a tuple in Python, with an example of each.",
    "Summarize the plot of a heist movie in which nothing goes according to plan.",
    "Suggest a name and a slogan for a bakery that only opens at night.",
    "List the steps to change a flat bicycle tire.",
    "Compose a polite email declining an invitation to a conference talk.",
]


@dataclass
class SharingTally:
    """Blocks in use and blocks referenced, summed over the steps of a run."""

    num_physical: int = 0
    num_referenced: int = 0

    def observe(self, num_physical: int, num_referenced: int) -> None:
        self.num_physical += num_physical
        self.num_referenced += num_referenced

    @property
    def saving(self) -> float:
        return 1 - self.num_physical / self.num_referenced if self.num_referenced else 0.0


def add_sharing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-prompts", type=int, default=len(INSTRUCTIONS), help="prompts in the workload")
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens per sequence (at most)")
    parser.add_argument("--widths", default="2,4,6", help="n for parallel sampling and beam width for beam search")
    add_engine_arguments(parser)


def run_sharing_bench(args: argparse.Namespace) -> str:
    from pagedllm_core.entrypoints.llm import LLM
    from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams

    llm = LLM(**engine_settings_from_args(args))
    engine = llm.llm_engine
    tokenizer = llm.get_tokenizer()
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False)
        for text in (INSTRUCTIONS * (1 + args.num_prompts // len(INSTRUCTIONS)))[: args.num_prompts]
    ]
    widths = [int(w) for w in args.widths.split(",")]
    rows = []
    for n in widths:
        params = SamplingParams(n=n, temperature=1.0, seed=0, max_tokens=args.max_tokens)
        rows.append(("parallel sampling", f"n = {n}", _tally_blocks(engine, prompts, params)))
    for width in widths:
        params = BeamSearchParams(beam_width=width, max_tokens=args.max_tokens)
        rows.append(("beam search", f"width = {width}", _tally_blocks(engine, prompts, params)))

    prompt_lengths = [len(p) for p in prompts]
    lines = [
        f"KV blocks with and without sharing: {len(prompts)} chat prompts "
        f"({min(prompt_lengths)}-{max(prompt_lengths)} tokens), up to {args.max_tokens} output tokens, "
        f"block size {engine.config.block_size}.",
        "",
        "| decoding | setting | block-steps with sharing | block-steps without | memory saved |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for decoding, setting, tally in rows:
        lines.append(
            f"| {decoding} | {setting} | {tally.num_physical:,} | {tally.num_referenced:,} | {tally.saving:.1%} |"
        )
    return "\n".join(lines)


def _tally_blocks(engine, prompts: list[list[int]], params) -> SharingTally:
    """Run every prompt with ``params`` together, counting physical and referenced blocks each step."""
    tally = SharingTally()
    for index, prompt in enumerate(prompts):
        engine.add_request(f"sharing-{index}", list(prompt), params)
    while engine.has_unfinished_requests():
        engine.step()
        stats = engine.kv_cache_stats()
        tally.observe(stats.num_used_blocks, stats.num_referenced_blocks)
    return tally

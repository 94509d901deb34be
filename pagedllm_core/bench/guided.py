"""``pagedllm bench guided``: what structured outputs cost — compile time, mask time, tokens/s.

One run measures, on the same engine:

- compile time: the first request (which also builds the backend's vocabulary), a new schema
  once the backend exists, and a schema already in the cache;
- output tokens/s of the same chat workload with and without a JSON schema (greedy); the run
  without generates exactly as many tokens per request as the guided run did (``ignore_eos``), so
  both do the same number of steps at the same batch sizes;
- the mask path per step, replayed on the guided run's own outputs: ``build_sampling_metadata``
  and the logits masking for the batch's rows with their constraint states minus the same rows
  without, with every state's mask built fresh (a new compile) and cached (the same compile).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "role": {"enum": ["engineer", "artist", "teacher", "doctor"]},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
        "rating": {"type": "number"},
    },
    "required": ["name", "age", "role"],
}
# A second schema, to time a compile once the backend's vocabulary exists.
OTHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["city"],
}
INSTRUCTIONS = [
    "Describe a fictional person as JSON.",
    "Invent a character for a novel and give their details as JSON.",
    "Give the profile of a new colleague as JSON.",
    "Describe your favourite teacher as JSON.",
]


@dataclass
class Run:
    """One pass of the workload."""

    seconds: float
    num_output_tokens: int
    num_valid: int

    @property
    def tokens_per_second(self) -> float:
        return self.num_output_tokens / self.seconds


def add_guided_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-prompts", type=int, default=8, help="chat prompts in the workload (one batch)")
    parser.add_argument("--max-tokens", type=int, default=96, help="output tokens per request (at most)")
    add_engine_arguments(parser)


def run_guided_bench(args: argparse.Namespace) -> str:
    from pagedllm_core.entrypoints.llm import LLM
    from pagedllm_core.sampling_params import SamplingParams
    from pagedllm_core.structured_outputs import StructuredOutputsParams

    llm = LLM(**engine_settings_from_args(args))
    engine = llm.llm_engine
    spec = StructuredOutputsParams(json=SCHEMA)
    first_compile = _seconds(lambda: engine.precompile_structured_output(spec))
    new_schema_compile = _seconds(
        lambda: engine.precompile_structured_output(StructuredOutputsParams(json=OTHER_SCHEMA))
    )
    cached_compile = _seconds(lambda: engine.precompile_structured_output(spec))

    conversations = [
        [{"role": "user", "content": INSTRUCTIONS[i % len(INSTRUCTIONS)]}] for i in range(args.num_prompts)
    ]
    guided_params = SamplingParams(temperature=0, max_tokens=args.max_tokens, structured_outputs=spec)
    llm.chat(conversations[:1], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
    guided, outputs = _run(llm, conversations, guided_params)
    plain_params = [
        SamplingParams(temperature=0, max_tokens=len(output.outputs[0].token_ids), ignore_eos=True)
        for output in outputs
    ]
    plain, _ = _run(llm, conversations, plain_params)

    engine.constraint_compiler.clear_cache()
    cold_mask, num_steps, mean_batch = _mask_seconds_per_step(engine, outputs, guided_params)
    warm_mask, _, _ = _mask_seconds_per_step(engine, outputs, guided_params)

    lines = [
        (
            f"Structured outputs (outlines): {args.num_prompts} chat prompts in one batch, greedy, up to "
            f"{args.max_tokens} output tokens, JSON schema with 5 fields (string, integer, enum, array, number)."
        ),
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| first request's compile (vocabulary + schema) | {first_compile * 1000:,.0f} ms |",
        f"| compile of a new schema | {new_schema_compile * 1000:,.0f} ms |",
        f"| compile of a cached schema | {cached_compile * 1e6:,.0f} µs |",
        f"| output tok/s with guidance | {guided.tokens_per_second:.1f} ({guided.num_output_tokens} tokens) |",
        (
            f"| output tok/s without guidance, same lengths | {plain.tokens_per_second:.1f} "
            f"({plain.num_output_tokens} tokens) |"
        ),
        (
            f"| outputs that are valid JSON: with / without guidance | {guided.num_valid}/{args.num_prompts} / "
            f"{plain.num_valid}/{args.num_prompts} |"
        ),
        (
            f"| mask time per step, masks built fresh ({mean_batch:.1f} rows, {num_steps} steps) "
            f"| {cold_mask * 1000:.2f} ms |"
        ),
        f"| mask time per step, masks cached | {warm_mask * 1000:.2f} ms |",
    ]
    return "\n".join(lines)


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _run(llm, conversations, params):
    start = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    completions = [output.outputs[0] for output in outputs]
    num_valid = sum(_is_json(completion.text) for completion in completions)
    return Run(seconds, sum(len(c.token_ids) for c in completions), num_valid), outputs


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _mask_seconds_per_step(engine, outputs, params) -> tuple[float, int, float]:
    """Replay the guided outputs step by step: (extra seconds per step, steps, mean rows per step)."""
    import torch

    from pagedllm_core.sampling.logits_processors import apply_allowed_tokens
    from pagedllm_core.testing import build_sampling_rows
    from pagedllm_core.worker.sampling_metadata import build_sampling_metadata

    compiled = engine.constraint_compiler.compile(params.structured_outputs)
    vocab_size, device = engine.vocab_size, engine.device
    token_lists = [output.outputs[0].token_ids for output in outputs]
    states = [compiled.new_state() for _ in outputs]
    num_steps = max(len(tokens) for tokens in token_lists)
    extra = 0.0
    num_rows = 0
    for step in range(num_steps):
        live = [index for index, tokens in enumerate(token_lists) if step < len(tokens)]
        logits = torch.randn(len(live), vocab_size, device=device)
        start = time.perf_counter()
        build_sampling_metadata(*build_sampling_rows([params] * len(live), vocab_size), device)
        _synchronize(device)
        plain_seconds = time.perf_counter() - start
        start = time.perf_counter()
        bitmasks = [states[index].allowed_token_bitmask().numpy().tobytes() for index in live]
        rows = build_sampling_rows([params] * len(live), vocab_size, allowed_token_bitmasks=bitmasks)
        apply_allowed_tokens(logits, build_sampling_metadata(*rows, device))
        for index in live:
            states[index].accept_token(token_lists[index][step])
        _synchronize(device)
        extra += time.perf_counter() - start - plain_seconds
        num_rows += len(live)
    return extra / num_steps, num_steps, num_rows / num_steps


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)

"""How much a quantized model differs from its float model: perplexity on held-out text and greedy agreement.

    python -m pagedllm_quant_awq.quality --reference default --quantized OUT_DIR

runs both through pagedllm (float32) and prints a markdown table. The held-out text ships with the plugin
(``data/heldout.txt``, written for it, disjoint from the calibration text).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from importlib import resources

from pagedllm_core.sampling_params import SamplingParams

PROMPTS = (
    "The capital of France is",
    "Once upon a time, a small robot",
    "def fibonacci(n):",
    "The three primary colors are",
    "To bake bread at home, you need",
    "Water freezes at a temperature of",
    "The best way to learn a new language is",
    "In the year 1492,",
    "A healthy breakfast includes",
    "The main difference between a cat and a dog is",
)


# Both models in float32 with a small KV pool: one sequence of the held-out text at a time.
ENGINE_SETTINGS = dict(dtype="float32", max_model_len=2048, kv_cache_memory="256MiB")


def heldout_text() -> str:
    return resources.files("pagedllm_quant_awq").joinpath("data/heldout.txt").read_text(encoding="utf-8")


def perplexity(llm, text: str) -> float:
    """exp of the mean negative log-likelihood of every token of ``text`` after the first."""
    token_ids = llm.get_tokenizer()(text, add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0)
    (output,) = llm.generate([{"prompt_token_ids": token_ids}], params, use_tqdm=False)
    logprobs = [position[token].logprob for token, position in zip(token_ids[1:], output.prompt_logprobs[1:])]
    return math.exp(-sum(logprobs) / len(logprobs))


@dataclass(frozen=True)
class Agreement:
    """Greedy continuations of the same prompts by two models."""

    num_prompts: int
    num_identical: int  # prompts whose whole continuation is the same
    mean_common_prefix: float  # tokens before the first difference, averaged over prompts


def greedy_agreement(reference, quantized, num_tokens: int, prompts=PROMPTS) -> Agreement:
    params = SamplingParams(max_tokens=num_tokens, temperature=0, ignore_eos=True)
    first = [o.outputs[0].token_ids for o in reference.generate(list(prompts), params, use_tqdm=False)]
    second = [o.outputs[0].token_ids for o in quantized.generate(list(prompts), params, use_tqdm=False)]
    prefixes = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(x)) for x, y in zip(first, second)]
    return Agreement(len(prompts), sum(p == num_tokens for p in prefixes), sum(prefixes) / len(prefixes))


def quality_table(reference_model: str | None, quantized_model: str, num_tokens: int = 32) -> str:
    from pagedllm_core import LLM

    reference = LLM(model=reference_model, quantization="none", **ENGINE_SETTINGS)
    quantized = LLM(model=quantized_model, **ENGINE_SETTINGS)
    text = heldout_text()
    agreement = greedy_agreement(reference, quantized, num_tokens)
    rows = [
        "| model | perplexity (held-out text) | greedy: identical first {n} tokens | greedy: mean common prefix |".format(n=num_tokens),
        "|---|---|---|---|",
        f"| {reference_model or 'default'} (float32) | {perplexity(reference, text):.3f} | reference | reference |",
        f"| {quantized_model} | {perplexity(quantized, text):.3f} | {agreement.num_identical}/{agreement.num_prompts} "
        f"| {agreement.mean_common_prefix:.1f} tokens |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="default", help="the float model ('default': pagedllm's default)")
    parser.add_argument("--quantized", required=True, help="the quantized checkpoint")
    parser.add_argument("--num-tokens", type=int, default=32, help="greedy tokens compared per prompt")
    args = parser.parse_args()
    print(quality_table(None if args.reference == "default" else args.reference, args.quantized, args.num_tokens))


if __name__ == "__main__":
    main()

"""What rounding activations to int8 (the gguf option ``int8_activations``) costs in quality, on the default model.

    .venv/bin/python benchmarks/gguf_int8_quality.py --num-tokens 128

Runs the default GGUF with its blocks in float32 and with int8 activations, every step through the blocks
(``max_block_rows`` above the held-out text's length, so that prompts go through the same kernel as
decoding), and prints perplexity on the AWQ plugin's held-out text and the greedy agreement of the two
on its ten prompts, as a markdown table.
"""

from __future__ import annotations

import argparse

from pagedllm_core import LLM
from pagedllm_quant_awq.quality import ENGINE_SETTINGS, PROMPTS, greedy_agreement, heldout_text, perplexity

EVERY_STEP_FROM_THE_BLOCKS = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-tokens", type=int, default=128, help="greedy tokens compared per prompt (default: 128)")
    args = parser.parse_args()
    llms = {
        int8: LLM(**ENGINE_SETTINGS, plugin_options={"quantization": {
            "max_block_rows": EVERY_STEP_FROM_THE_BLOCKS, "int8_activations": int8}})
        for int8 in (False, True)
    }
    text = heldout_text()
    agreement = greedy_agreement(llms[False], llms[True], args.num_tokens)
    print(f"| activations | perplexity (held-out text) | greedy: identical first {args.num_tokens} tokens "
          "| greedy: mean common prefix |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| float32 | {perplexity(llms[False], text):.3f} | reference | reference |")
    print(f"| int8, groups of 32 | {perplexity(llms[True], text):.3f} | {agreement.num_identical}/{len(PROMPTS)} "
          f"| {agreement.mean_common_prefix:.1f} tokens |")


if __name__ == "__main__":
    main()

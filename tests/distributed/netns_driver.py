"""Runs an engine and prints what the test compares: run as a program inside a network namespace.

Usage: python netns_driver.py '{"model": ..., "tensor_parallel_size": 2, ...}' '["prompt", ...]' NUM_NEW_TOKENS
"""

import json
import sys

from pagedllm_core import LLM, SamplingParams


def main() -> None:
    settings, prompts, num_new_tokens = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
    llm = LLM(**settings)
    params = SamplingParams(temperature=0, max_tokens=num_new_tokens, ignore_eos=True)
    token_ids = [list(output.outputs[0].token_ids) for output in llm.generate(prompts, params, use_tqdm=False)]
    worker_nodes = getattr(llm.llm_engine.executor, "worker_nodes", None)
    llm.llm_engine.shutdown()
    print(json.dumps({"token_ids": token_ids, "worker_nodes": worker_nodes}))


if __name__ == "__main__":
    main()

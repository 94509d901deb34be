"""The benchmark workloads of issue 6, as plain token-id prompts that any engine can be given.

Prompts are random token ids drawn with Python's own ``random`` (no torch or numpy), so the same
seed gives the same prompts in pagedllm's venv, in transformers' baseline and in vLLM's own venv.

- W1 ``throughput``: 200 requests, prompt lengths uniform in [64, 512], exactly 128 output tokens.
- W3 ``serve``: 200 requests of 256 prompt tokens and 128 output tokens, Poisson arrivals.
- W4 ``latency``: one request of 128 prompt tokens and 128 output tokens.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """Prompts (token ids) and how many tokens each must generate (EOS ignored)."""

    name: str
    prompts: list[list[int]]
    output_len: int

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(prompt) for prompt in self.prompts)

    @property
    def num_output_tokens(self) -> int:
        return self.output_len * len(self.prompts)


def random_prompts(
    num_prompts: int,
    min_len: int,
    max_len: int,
    vocab_size: int,
    excluded_token_ids: Iterable[int] = (),
    seed: int = 0,
) -> list[list[int]]:
    """``num_prompts`` prompts with lengths uniform in ``[min_len, max_len]`` and ids uniform over the
    vocabulary minus ``excluded_token_ids`` (special tokens, so no prompt holds an early EOS)."""
    excluded = set(excluded_token_ids)
    allowed = [token_id for token_id in range(vocab_size) if token_id not in excluded]
    rng = random.Random(seed)
    lengths = [rng.randint(min_len, max_len) for _ in range(num_prompts)]
    return [[rng.choice(allowed) for _ in range(length)] for length in lengths]


def throughput_workload(vocab_size: int, excluded_token_ids: Iterable[int] = (), num_prompts: int = 200,
                        seed: int = 0, min_input_len: int = 64, max_input_len: int = 512,
                        output_len: int = 128) -> Workload:
    """W1: offline throughput (the lengths are the issue's unless a small model needs shorter)."""
    prompts = random_prompts(num_prompts, min_input_len, max_input_len, vocab_size, excluded_token_ids, seed)
    return Workload("W1", prompts, output_len)


def serve_workload(vocab_size: int, excluded_token_ids: Iterable[int] = (), num_prompts: int = 200,
                   seed: int = 0, input_len: int = 256, output_len: int = 128) -> Workload:
    """W3: online serving (arrival times are the serve benchmark's business)."""
    prompts = random_prompts(num_prompts, input_len, input_len, vocab_size, excluded_token_ids, seed)
    return Workload("W3", prompts, output_len)


def latency_workload(vocab_size: int, excluded_token_ids: Iterable[int] = (), seed: int = 0, num_prompts: int = 1,
                     input_len: int = 128, output_len: int = 128) -> Workload:
    """W4: a single stream. Timing several iterations takes ``num_prompts`` distinct prompts, one per
    iteration, so that no iteration finds an earlier one's prompt in a prefix cache."""
    return Workload("W4", random_prompts(num_prompts, input_len, input_len, vocab_size, excluded_token_ids, seed),
                    output_len)

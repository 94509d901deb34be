"""Random walks through a constraint's masks: a model-free oracle for what the masks allow."""

from __future__ import annotations

import torch

from pagedllm_core.sampling.constraints import ConstraintState, unpack_token_bitmask

VOCAB_SIZE = 512  # of the tiny tokenizer and models


def allowed_token_ids(state: ConstraintState, vocab_size: int) -> list[int]:
    return unpack_token_bitmask(state.allowed_token_bitmask().unsqueeze(0), vocab_size)[0].nonzero().flatten().tolist()


def random_walk(
    state: ConstraintState, vocab_size: int, eos_token_ids, generator: torch.Generator, max_steps: int = 400
):
    """Draw uniformly among the allowed tokens until the state is complete; returns the tokens drawn
    (EOS excluded). Ending is drawn with a fixed chance where allowed, so walks are short but varied."""
    tokens: list[int] = []
    for _ in range(max_steps):
        allowed = allowed_token_ids(state, vocab_size)
        assert allowed, "a state that is not complete must allow some token"
        can_end = any(token in eos_token_ids for token in allowed)
        if can_end and torch.rand((), generator=generator) < 0.5:
            return tokens
        choices = [token for token in allowed if token not in eos_token_ids] or allowed
        token = choices[int(torch.randint(len(choices), (), generator=generator))]
        assert state.accept_token(token)
        if token in eos_token_ids:
            return tokens
        tokens.append(token)
        if state.is_complete():
            return tokens
    raise AssertionError(f"no end after {max_steps} tokens")

"""The contract of output constraints (registered through ``register_output_constraints``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class OutputConstraint(ABC):
    """Keeps one request's output inside a language (a JSON schema, a regex, a list of choices).

    One instance per generated sequence; it holds the automaton state for that sequence.
    """

    def __init__(self, spec: Any, tokenizer: Any):
        self.spec = spec
        self.tokenizer = tokenizer

    @abstractmethod
    def allowed_tokens(self, vocab_size: int) -> torch.Tensor:
        """A ``[vocab_size]`` bool mask of the tokens that may come next."""

    @abstractmethod
    def accept_token(self, token_id: int) -> None:
        """Advance the state past an emitted token."""

    @abstractmethod
    def is_complete(self) -> bool:
        """True when the output can only end here."""

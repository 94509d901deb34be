"""The contract of output constraints (registered through ``register_output_constraints``).

A :class:`ConstraintBackend` is built once per engine for its tokenizer and compiles each distinct
:class:`~pagedllm_core.structured_outputs.StructuredOutputsParams` into a :class:`CompiledConstraint`
(the engine caches those). Every constrained sequence holds a cheap :class:`ConstraintState` made
from it: before each draw the sampler masks the logits with the state's allowed tokens, and after
each draw the state accepts the emitted token.

Allowed tokens travel as a packed bitmask: a ``uint8`` tensor of ``ceil(vocab_size / 8)`` bytes
in which bit ``t % 8`` (least significant first) of byte ``t // 8`` is set when token ``t`` may
come next. :func:`pack_token_ids` builds one; :func:`unpack_token_bitmask` expands a batch of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from pagedllm_core.errors import ConfigError
from pagedllm_core.structured_outputs import StructuredOutputsParams


class StructuredOutputError(ConfigError):
    """A constraint cannot be compiled: an invalid schema or regex, or one too complex for the time bound."""


class ConstraintState(ABC):
    """One sequence's position in its constraint's automaton."""

    @abstractmethod
    def allowed_token_bitmask(self) -> torch.Tensor:
        """The tokens that may come next, packed as described in this module (CPU ``uint8``).

        When the output may end here, the end-of-sequence tokens are among them.
        """

    @abstractmethod
    def accept_token(self, token_id: int) -> bool:
        """Advance past an emitted token; False if the token was not allowed (the state is then complete)."""

    @abstractmethod
    def is_complete(self) -> bool:
        """True when nothing but the end of the output can follow (or an end-of-sequence token was accepted)."""

    @abstractmethod
    def copy(self) -> ConstraintState:
        """An independent state at the same position (for ``n > 1`` siblings and beams)."""


class CompiledConstraint(ABC):
    """A constraint compiled for one tokenizer; shared by every request with the same spec."""

    @abstractmethod
    def new_state(self) -> ConstraintState:
        """A state at the start of the output."""


class ConstraintBackend(ABC):
    """Compiles structured-output specs into constraints for one tokenizer.

    Constructed once per engine, lazily, the first time a request asks for structured output, and
    always off the engine's stepping thread; ``compile`` is called from worker threads too.

    :param tokenizer: the engine's Hugging Face tokenizer.
    :param vocab_size: the width of the model's logits (may exceed ``len(tokenizer)``).
    :param eos_token_ids: every token that ends a sequence.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: frozenset[int]):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids

    @abstractmethod
    def compile(self, spec: StructuredOutputsParams) -> CompiledConstraint:
        """Compile ``spec``; raise :class:`StructuredOutputError` saying what is wrong with it."""


def bitmask_size(vocab_size: int) -> int:
    """Bytes in the packed bitmask of a vocabulary."""
    return (vocab_size + 7) // 8


def pack_token_ids(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The packed bitmask ``uint8 [bitmask_size(vocab_size)]`` with the bits of ``token_ids`` set."""
    allowed = torch.zeros(bitmask_size(vocab_size) * 8, dtype=torch.bool)
    allowed[token_ids] = True
    weights = torch.tensor([1 << bit for bit in range(8)], dtype=torch.uint8)
    return (allowed.view(-1, 8).to(torch.uint8) * weights).sum(dim=-1, dtype=torch.uint8)


def unpack_token_bitmask(packed: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``packed``: ``uint8 [num_rows, bitmask_size]`` -> bool ``[num_rows, vocab_size]`` allowed tokens."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1  # [num_rows, bitmask_size, 8]
    return bits.view(packed.shape[0], -1)[:, :vocab_size].bool()


def packed_bitmasks_from_bytes(bitmasks: list[bytes]) -> torch.Tensor:
    """Packed bitmasks sent as bytes (one per row, as step messages carry them) -> ``uint8 [num_rows, bitmask_size]``."""
    return torch.frombuffer(bytearray(b"".join(bitmasks)), dtype=torch.uint8).view(len(bitmasks), -1)

"""The ``outlines`` output-constraint backend: specs -> outlines-core indexes -> per-sequence states."""

from __future__ import annotations

import array
from dataclasses import dataclass

import torch
from outlines_core import Index, Vocabulary

from pagedllm_core.sampling.constraints import (
    CompiledConstraint,
    ConstraintBackend,
    ConstraintState,
    StructuredOutputError,
    pack_token_ids,
)
from pagedllm_core.structured_outputs import StructuredOutputsParams
from pagedllm_guided_json.regexes import spec_regex
from pagedllm_guided_json.vocabulary import token_bytes


class OutlinesBackend(ConstraintBackend):
    """Compiles specs to regexes, and regexes to outlines-core token indexes over this tokenizer.

    The outlines vocabulary (every ordinary token's bytes) is built once, here; each compile then
    builds one :class:`outlines_core.Index`, the token-level automaton of the spec's regex.
    """

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: frozenset[int]):
        super().__init__(tokenizer, vocab_size, eos_token_ids)
        if not eos_token_ids:
            raise StructuredOutputError("structured outputs need a model with an end-of-sequence token")
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id in eos_token_ids else min(eos_token_ids)
        by_bytes: dict[bytes, list[int]] = {}
        for token_id, text in token_bytes(tokenizer).items():
            if token_id < vocab_size and token_id not in eos_token_ids:
                by_bytes.setdefault(text, []).append(token_id)
        self.vocabulary = Vocabulary(eos, by_bytes)

    def compile(self, spec: StructuredOutputsParams) -> OutlinesConstraint:
        regex = spec_regex(spec)
        try:
            index = Index(regex, self.vocabulary)
        except ValueError as error:
            raise StructuredOutputError(
                f"the {spec.kind} constraint cannot be compiled ({error}); outlines-core supports Rust regex "
                "syntax without lookaround or backreferences"
            ) from None
        return OutlinesConstraint(index, self.vocab_size, self.eos_token_ids)


@dataclass(frozen=True)
class _StateMask:
    bitmask: torch.Tensor  # packed allowed tokens, EOS included where the output may end
    can_only_end: bool


class OutlinesConstraint(CompiledConstraint):
    """One compiled spec: its index plus the allowed-token mask of every automaton state visited so far.

    Masks are cached per state (``vocab_size / 8`` bytes each), so a state's mask is built once,
    whichever sequence reaches it first; the initial state's is built while compiling.
    """

    def __init__(self, index: Index, vocab_size: int, eos_token_ids: frozenset[int]):
        self.index = index
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self._eos_ids = torch.tensor(sorted(eos_token_ids), dtype=torch.int64)
        self._masks: dict[int, _StateMask] = {}
        self.initial_state = index.get_initial_state()
        self.mask(self.initial_state)

    def new_state(self) -> OutlinesState:
        return OutlinesState(self, self.initial_state)

    def mask(self, state: int) -> _StateMask:
        mask = self._masks.get(state)
        if mask is None:
            mask = self._masks[state] = self._build_mask(state)
        return mask

    def _build_mask(self, state: int) -> _StateMask:
        allowed = self.index.get_allowed_tokens(state)
        token_ids = torch.frombuffer(array.array("q", allowed), dtype=torch.int64) if allowed else self._eos_ids[:0]
        final = self.index.is_final_state(state)
        if final:
            token_ids = torch.cat([token_ids, self._eos_ids])
        can_only_end = final and all(token in self.eos_token_ids for token in allowed)
        return _StateMask(pack_token_ids(token_ids, self.vocab_size), can_only_end)


class OutlinesState(ConstraintState):
    """A sequence's automaton state in an :class:`OutlinesConstraint`; copying it costs two fields."""

    __slots__ = ("compiled", "ended", "state")

    def __init__(self, compiled: OutlinesConstraint, state: int, ended: bool = False):
        self.compiled = compiled
        self.state = state
        self.ended = ended

    def allowed_token_bitmask(self) -> torch.Tensor:
        return self.compiled.mask(self.state).bitmask

    def accept_token(self, token_id: int) -> bool:
        if token_id in self.compiled.eos_token_ids:
            self.ended = True
            return self.compiled.index.is_final_state(self.state)
        next_state = self.compiled.index.get_next_state(self.state, token_id)
        if next_state is None:
            self.ended = True
            return False
        self.state = next_state
        return True

    def is_complete(self) -> bool:
        return self.ended or self.compiled.mask(self.state).can_only_end

    def copy(self) -> OutlinesState:
        return OutlinesState(self.compiled, self.state, self.ended)

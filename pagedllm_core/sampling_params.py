"""Per-request decoding settings, named and validated as vLLM users know them."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from pagedllm_core.errors import ConfigError
from pagedllm_core.structured_outputs import StructuredOutputsParams

# The engine carries integer settings in int64 tensors: anything outside this range would
# overflow on the stepping thread, so it is refused here.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# Penalties scale float32 logits: outside these bounds they overflow them to inf or flush them to 0.
REPETITION_PENALTY_RANGE = (0.01, 100.0)
# Beam scores divide by num_generated ** length_penalty, which must stay a finite float.
LENGTH_PENALTY_RANGE = (-10.0, 10.0)


@dataclass
class SamplingParams:
    """How to pick tokens for one request and when to stop.

    ``temperature=0`` is greedy. ``top_k`` of 0 or -1 (or at least the vocabulary size), ``top_p``
    of 1 and ``min_p`` of 0 disable those filters. ``seed`` makes this request's samples
    reproducible whatever else shares its batch. Integers must fit in int64 and floats must be
    finite (the engine's tensors hold them). ``n`` sequences are returned out of ``best_of``
    generated (the best by cumulative logprob).
    """

    n: int = 1
    best_of: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    logit_bias: dict[int, float] | None = None
    skip_special_tokens: bool = True
    detokenize: bool = True
    # Keep the output inside a JSON schema, regex or choice (needs the guided plugin: pagedllm[guided]).
    structured_outputs: StructuredOutputsParams | None = None
    # Not a sampling setting, but per request like one: only requests with the same salt share
    # prefix-cached KV blocks (so one tenant cannot time another's prompts).
    cache_salt: str | None = None
    # Derived, not set by users.
    stop_strings: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stop_strings = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.logit_bias = {int(token): float(bias) for token, bias in (self.logit_bias or {}).items()}
        if self.best_of is None:
            self.best_of = self.n
        self._validate()

    def _validate(self) -> None:
        self._check_types()
        _check(self.n >= 1, f"n must be at least 1, got {self.n}")
        _check(self.best_of >= self.n, f"best_of must be >= n ({self.n}), got {self.best_of}")
        _check(self.temperature >= 0, f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        _check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= -1, f"top_k must be -1 or 0 (disabled) or a positive count, got {self.top_k}")
        _check(0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _check(-2 <= value <= 2, f"{name} must be in [-2, 2], got {value}")
        low, high = REPETITION_PENALTY_RANGE
        _check(
            low <= self.repetition_penalty <= high,
            f"repetition_penalty must be in [{low:g}, {high:g}] (1 disables it), got {self.repetition_penalty}",
        )
        _check(
            self.max_tokens is None or self.max_tokens >= 1, f"max_tokens must be at least 1, got {self.max_tokens}"
        )
        _check(self.min_tokens >= 0, f"min_tokens must be >= 0, got {self.min_tokens}")
        _check(
            self.max_tokens is None or self.min_tokens <= self.max_tokens,
            f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})",
        )
        _check(self.seed is None or 0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}")
        _check(
            all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids),
            f"stop_token_ids must be non-negative integers, got {self.stop_token_ids}",
        )
        _check(all(self.stop_strings), "stop strings must be non-empty")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            _check(value is None or value >= 0, f"{name} must be >= 0 (the number of top tokens), got {value}")
        _check(
            all(-100 <= bias <= 100 for bias in self.logit_bias.values()),
            f"logit_bias values must be in [-100, 100], got {self.logit_bias}",
        )
        _check(
            self.detokenize or not self.stop_strings, "stop strings need detokenize=True (they are matched on text)"
        )
        _check(self.cache_salt != "", "cache_salt must be a non-empty string (or None for no salt)")
        _check(
            self.structured_outputs is None or isinstance(self.structured_outputs, StructuredOutputsParams),
            f"structured_outputs must be a StructuredOutputsParams, got {type(self.structured_outputs).__name__}",
        )

    def _check_types(self) -> None:
        """Integers are integers within int64 and floats are finite numbers, before any range check."""
        for name in ("n", "best_of", "top_k", "seed", "max_tokens", "min_tokens", "logprobs", "prompt_logprobs"):
            _check_int(name, getattr(self, name))
        for token in self.stop_token_ids:
            _check_int("stop_token_ids", token)
        for token in self.logit_bias:
            _check_int("logit_bias token ids", token)
        for name in (
            "temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"
        ):
            _check_finite(name, getattr(self, name))
        for bias in self.logit_bias.values():
            _check_finite("logit_bias values", bias)

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_int(name: str, value) -> None:
    if value is None:
        return
    _check(
        isinstance(value, numbers.Integral) and not isinstance(value, bool),
        f"{name} must be an integer, got {type(value).__name__} {value!r}",
    )
    _check(INT64_MIN <= value <= INT64_MAX, f"{name} must fit in a signed 64-bit integer, got {value}")


def _check_finite(name: str, value) -> None:
    _check(
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value),
        f"{name} must be a finite number, got {value!r}",
    )


@dataclass
class BeamSearchParams:
    """Settings of ``LLM.beam_search``: keep the ``beam_width`` best sequences by cumulative logprob.

    Finished beams are ranked by ``cum_logprob / num_generated ** length_penalty``, the number of
    generated tokens counting a final EOS, as Hugging Face's ``generate(num_beams=...)`` ranks them.
    ``temperature`` > 0 scores candidates with ``log_softmax(logits / temperature)``; 0 uses the
    raw log-probabilities.
    """

    beam_width: int
    max_tokens: int
    ignore_eos: bool = False
    temperature: float = 0.0
    length_penalty: float = 1.0
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self) -> None:
        _check_int("beam_width", self.beam_width)
        _check_int("max_tokens", self.max_tokens)
        _check_finite("temperature", self.temperature)
        _check_finite("length_penalty", self.length_penalty)
        _check(self.beam_width >= 1, f"beam_width must be at least 1, got {self.beam_width}")
        _check(self.max_tokens >= 1, f"max_tokens must be at least 1, got {self.max_tokens}")
        _check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        low, high = LENGTH_PENALTY_RANGE
        _check(
            low <= self.length_penalty <= high,
            f"length_penalty must be in [{low:g}, {high:g}] (1 ranks by mean logprob), got {self.length_penalty}",
        )

"""The sampler contract: batched parameters in, one token (and its logprobs) per row out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.sampling_params import SamplingParams


@dataclass
class SamplingMetadata:
    """The sampling parameters of a step's rows, as tensors on the logits' device (one row per sequence)."""

    temperature: torch.Tensor  # [num_rows] float32; 0 for greedy rows
    top_k: torch.Tensor  # [num_rows] int64; vocab size where disabled
    top_p: torch.Tensor  # [num_rows] float32; 1 where disabled
    min_p: torch.Tensor  # [num_rows] float32; 0 where disabled
    all_greedy: bool
    no_top_k: bool
    no_top_p: bool
    no_min_p: bool
    # Penalties (None when no row has any): [num_rows] factors and [num_rows, vocab] token statistics.
    presence_penalty: torch.Tensor | None = None
    frequency_penalty: torch.Tensor | None = None
    repetition_penalty: torch.Tensor | None = None
    prompt_token_mask: torch.Tensor | None = None  # bool, token occurs in the prompt
    output_token_counts: torch.Tensor | None = None  # int, occurrences in the output so far
    # Sparse per-row additions and bans as (rows, token ids[, values]).
    logit_bias: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    banned_tokens: tuple[torch.Tensor, torch.Tensor] | None = None  # stop tokens before min_tokens
    # Structured outputs: (rows, bool [len(rows), vocab] tokens each may draw); None when no row is constrained.
    # Samplers must draw only allowed tokens; logprobs stay those of the raw distribution.
    allowed_tokens: tuple[torch.Tensor, torch.Tensor] | None = None
    # The largest number of top logprobs any row asked for (None: nobody asked).
    max_num_logprobs: int | None = None
    # Rows whose chosen token's logprob someone needs (logprobs asked for, or best_of > n ranking);
    # None: every row.
    logprob_rows: list[int] | None = None
    # Rows whose request brought a seed draw from their own generator, so batch mates do not matter.
    generators: dict[int, torch.Generator] = field(default_factory=dict)


@dataclass
class SamplerOutput:
    """A step's sampled tokens with their log-probabilities under the model's raw distribution."""

    token_ids: torch.Tensor  # [num_rows] int64
    # [len(logprob_rows)] float32, log p(chosen token) of the rows in logprob_rows (every row when
    # that is None); None when no row needed it.
    logprobs: torch.Tensor | None
    logprob_rows: list[int] | None = None
    # Only when logprobs were asked for:
    ranks: torch.Tensor | None = None  # [num_rows] int64, 1 + the number of tokens more likely than the chosen one
    top_token_ids: torch.Tensor | None = None  # [num_rows, max_num_logprobs]
    top_logprobs: torch.Tensor | None = None  # [num_rows, max_num_logprobs]


def argmax_rows(values: torch.Tensor) -> torch.Tensor:
    """The index of each row's largest value, as ``values.argmax(dim=-1)`` gives it (the first on ties, a NaN
    before any number). ``values.max(dim=-1)`` returns the same indices faster on a CPU: 2-4x for a greedy
    step's 200 x 49,152 float32 logits on an AMX Xeon (docs/benchmarks.md, "W1 in bfloat16")."""
    return values.max(dim=-1).indices


def needs_sample_logprobs(params: SamplingParams) -> bool:
    """Whether a request needs its sampled tokens' logprobs: it asked for logprobs, or ``best_of > n``
    returns the sequences of highest cumulative logprob (without either, vLLM reports none)."""
    return params.logprobs is not None or params.best_of > params.n


def score_tokens(logprobs: torch.Tensor, token_ids: torch.Tensor, num_top: int | None) -> SamplerOutput:
    """Each row's ``token_ids`` logprob from ``logprobs`` ``[num_rows, vocab]``; with ``num_top``
    (0 included) also its rank and the ``num_top`` most likely tokens."""
    chosen = logprobs.gather(-1, token_ids.unsqueeze(-1))
    output = SamplerOutput(token_ids=token_ids, logprobs=chosen.squeeze(-1))
    if num_top is not None:
        output.ranks = (logprobs > chosen).sum(dim=-1) + 1
        if num_top:
            output.top_logprobs, output.top_token_ids = logprobs.topk(num_top, dim=-1)
    return output


def score_sampled_tokens(
    logits: torch.Tensor, token_ids: torch.Tensor, num_top: int | None, logprob_rows: list[int] | None = None
) -> SamplerOutput:
    """:func:`score_tokens` under the raw distribution of ``logits``. When no ranks or top logprobs are
    asked for, only the chosen tokens' logprobs are formed (no full ``[num_rows, vocab]`` log-softmax),
    and only for ``logprob_rows`` (None: every row); with no such row nothing is computed."""
    if num_top is not None:
        return score_tokens(logits.log_softmax(dim=-1), token_ids, num_top)
    if logprob_rows is not None and len(logprob_rows) == logits.shape[0]:
        logprob_rows = None
    if logprob_rows is not None:
        if not logprob_rows:
            return SamplerOutput(token_ids=token_ids, logprobs=None, logprob_rows=[])
        logits, token_ids_scored = logits[logprob_rows], token_ids[logprob_rows]
    else:
        token_ids_scored = token_ids
    chosen = logits.gather(-1, token_ids_scored.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)
    return SamplerOutput(token_ids=token_ids, logprobs=chosen, logprob_rows=logprob_rows)


class Sampler(ABC):
    """Picks one next token per row of logits.

    The engine has already applied every request setting that edits logits (logit bias, penalties,
    ``min_tokens`` bans, structured-output masks: see :func:`pagedllm_core.sampling.pipeline.sample_tokens`), so a sampler only
    chooses; logprobs are computed afterwards from the raw logits."""

    def __init__(self, config: EngineConfig):
        self.config = config

    @abstractmethod
    def sample(self, logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
        """``logits``: float32 ``[num_rows, vocab_size]``, processed -> ``[num_rows]`` int64 token ids.

        Rows with ``temperature`` 0 are greedy; a row's tokens outside ``metadata.allowed_tokens``
        are already ``-inf``."""

"""When a sequence is finished, and why: the one place that decides it.

A sequence stops on a stop token (after ``min_tokens``), when its structured-output constraint can
only end, when it reaches its output-token limit, or when its detokenized text contains a stop
string. The first three are judged on every sampled token (:func:`after_token`); stop strings are
judged on the text as it grows (:func:`find_stop_string`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pagedllm_core.sampling_params import SamplingParams

if TYPE_CHECKING:
    from pagedllm_core.engine.sequence import Sequence, SequenceStatus


def stop_token_ids(params: SamplingParams, eos_token_ids: frozenset[int]) -> frozenset[int]:
    """The tokens that end a sequence: the request's stop token ids, and EOS unless ``ignore_eos``."""
    stops = set(params.stop_token_ids)
    if not params.ignore_eos:
        stops |= eos_token_ids
    return frozenset(stops)


def after_token(sequence: Sequence, token_id: int, constraint_open: bool) -> tuple[SequenceStatus, int | None] | None:
    """The status and stop reason of a sequence that just appended ``token_id``; None while it goes on."""
    from pagedllm_core.engine.sequence import SequenceStatus

    if token_id in sequence.stop_token_ids and sequence.num_output_tokens > sequence.sampling_params.min_tokens:
        return SequenceStatus.FINISHED_STOPPED, token_id
    if not constraint_open:
        return SequenceStatus.FINISHED_STOPPED, None
    if sequence.num_output_tokens >= sequence.max_output_tokens:
        return SequenceStatus.FINISHED_LENGTH, None
    return None


def find_stop_string(text: str, previous_length: int, params: SamplingParams) -> tuple[int, str] | None:
    """Where ``text`` must be cut and the stop string that matched, for a match that overlaps the text
    added after ``previous_length``; None when no stop string matches."""
    for stop in params.stop_strings:
        start = text.find(stop, max(previous_length - len(stop) + 1, 0))
        if start != -1:
            return (start + len(stop) if params.include_stop_str_in_output else start), stop
    return None

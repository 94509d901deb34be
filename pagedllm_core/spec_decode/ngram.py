"""Prompt lookup: draft the tokens that followed the latest earlier occurrence of the sequence's suffix."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def propose_ngram(token_ids: np.ndarray, min_n: int, max_n: int, num_tokens: int) -> list[int]:
    """Up to ``num_tokens`` draft tokens for the sequence ``token_ids`` (prompt and output so far).

    The longest suffix of ``n`` tokens (``max_n`` down to ``min_n``) that also occurs earlier wins.
    Of its earlier occurrences the latest followed by ``num_tokens`` tokens is used (the most local
    evidence of what comes next), else the earliest (the longest continuation there is). Empty when
    no suffix recurs."""
    length = len(token_ids)
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        suffix = token_ids[length - n :]
        # Windows starting before the suffix itself, so each is followed by at least one token.
        windows = sliding_window_view(token_ids[: length - 1], n)
        matches = np.flatnonzero((windows == suffix).all(axis=1))
        if matches.size:
            complete = matches[matches + n + num_tokens <= length]
            start = int(complete[-1] if complete.size else matches[0]) + n
            return token_ids[start : start + num_tokens].tolist()
    return []

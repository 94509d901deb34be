"""Timing an engine's phases by wrapping its own methods for the length of a benchmark."""

from __future__ import annotations

import time
from collections import defaultdict


class ExclusiveTimer:
    """Accumulates seconds per phase while methods are wrapped; a call's time excludes that of the
    wrapped calls inside it, so nested phases (a norm inside the model's forward) add up to the whole."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner: list[float] = []  # per open call: seconds spent in wrapped calls within it

    def wrap(self, owner, attribute: str, phase: str) -> None:
        original = getattr(owner, attribute)
        seconds, inner = self.seconds, self._inner

        def timed(*args, **kwargs):
            inner.append(0.0)
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - began
                seconds[phase] += elapsed - inner.pop()
                if inner:
                    inner[-1] += elapsed

        setattr(owner, attribute, timed)

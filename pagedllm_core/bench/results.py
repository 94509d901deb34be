"""What an offline benchmark run measured, for pagedllm and for a baseline alike."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class ThroughputResult:
    """One system's run over a whole workload."""

    system: str  # e.g. "pagedllm", "transformers, batch 16"
    num_requests: int
    num_prompt_tokens: int
    num_output_tokens: int  # counted from what came back, not what was asked for
    elapsed: float  # seconds from the first request in to the last token out
    peak_memory_bytes: int
    model_flops: int  # the work the model needs for the workload (see roofline.ModelFlops)

    @property
    def requests_per_second(self) -> float:
        return self.num_requests / self.elapsed

    @property
    def output_tokens_per_second(self) -> float:
        return self.num_output_tokens / self.elapsed

    @property
    def total_tokens_per_second(self) -> float:
        return (self.num_prompt_tokens + self.num_output_tokens) / self.elapsed

    @property
    def model_flops_per_second(self) -> float:
        return self.model_flops / self.elapsed


@dataclass(frozen=True)
class StreamTiming:
    """One request generated alone: time to its first token, then the time of the other tokens."""

    ttft: float  # seconds from the request in to its first token out
    decode_seconds: float  # from the first token out to the last
    num_output_tokens: int

    @property
    def decode_tokens_per_second(self) -> float:
        return (self.num_output_tokens - 1) / self.decode_seconds


@dataclass(frozen=True)
class LatencyResult:
    """One system's timed single-stream iterations."""

    system: str
    timings: list[StreamTiming]

    @property
    def ttft_mean(self) -> float:
        return statistics.fmean(timing.ttft for timing in self.timings)

    @property
    def ttft_median(self) -> float:
        return statistics.median(timing.ttft for timing in self.timings)

    @property
    def decode_tokens_per_second_mean(self) -> float:
        return statistics.fmean(timing.decode_tokens_per_second for timing in self.timings)

    @property
    def decode_tokens_per_second_median(self) -> float:
        return statistics.median(timing.decode_tokens_per_second for timing in self.timings)

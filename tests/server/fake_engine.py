"""A model-free stand-in for ``LLMEngine``: each request emits one token per step."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pagedllm_core.engine.core_outputs import EngineCoreOutput, SequenceUpdate
from pagedllm_core.engine.output_processor import OutputProcessor
from pagedllm_core.engine.prefix_cache import PrefixCacheStats
from pagedllm_core.spec_decode.stats import SpecDecodeStats
from pagedllm_core.errors import ConfigError


class FakeTokenizer:
    """Characters are tokens; records which threads encoded and decoded."""

    chat_template = None

    def __init__(self):
        self.encode_threads: set[str] = set()
        self.decode_threads: set[str] = set()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.encode_threads.add(threading.current_thread().name)
        return [ord(character) for character in text]

    def decode(self, token_ids, **_) -> str:
        self.decode_threads.add(threading.current_thread().name)
        return "".join(chr(token) for token in token_ids)

    def __len__(self) -> int:
        return 0x110000


@dataclass
class FakeKVStats:
    num_blocks: int
    num_used_blocks: int


class FakeEngine:
    """Request ``r`` produces ``max_tokens`` tokens ("a", "b", ...), one per ``step_core()``; the real
    output processor makes text of them.

    ``fail_next_step`` makes ``step_core()`` raise; ``step_gate`` (if set) must be set for a step to run.
    """

    max_model_len = 64

    def __init__(self):
        self.tokenizer = FakeTokenizer()
        self.output_processor = OutputProcessor(self.tokenizer)
        self.requests: dict[str, tuple[list[int], int, list[int]]] = {}
        self.fail_next_step = False
        self.step_gate: threading.Event | None = None
        self.step_threads: set[str] = set()

    def add_core_request(self, request_id, prompt_token_ids, sampling_params) -> None:
        if len(prompt_token_ids) >= self.max_model_len:
            raise ConfigError(f"prompt of {len(prompt_token_ids)} tokens is too long")
        if request_id in self.requests:
            raise ConfigError(f"request id {request_id!r} is already in use")
        self.requests[request_id] = (list(prompt_token_ids), sampling_params.max_tokens or 8, [])

    def abort_core_requests(self, request_ids):
        return [self._output(rid, [], "abort") for rid in list(request_ids) if rid in self.requests]

    def finish_stopped_sequences(self, stopped) -> None:
        for request_id, _, _ in stopped:
            self.requests.pop(request_id, None)

    def step_core(self):
        self.step_threads.add(threading.current_thread().name)
        if self.step_gate is not None:
            self.step_gate.wait()
        if self.fail_next_step:
            raise RuntimeError("injected step failure")
        outputs = []
        for request_id, (_, max_tokens, tokens) in list(self.requests.items()):
            token = ord("a") + len(tokens) % 26
            tokens.append(token)
            outputs.append(self._output(request_id, [token], "length" if len(tokens) >= max_tokens else None))
        return outputs

    def _output(self, request_id: str, new_token_ids: list[int], finish_reason: str | None) -> EngineCoreOutput:
        if finish_reason is not None:
            del self.requests[request_id]
        update = SequenceUpdate(0, new_token_ids, finish_reason=finish_reason)
        return EngineCoreOutput(request_id, [update], finished=finish_reason is not None)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def shutdown(self) -> None:
        self.shut_down = True

    def kv_cache_stats(self) -> FakeKVStats:
        return FakeKVStats(num_blocks=100, num_used_blocks=len(self.requests))

    def prefix_cache_stats(self) -> PrefixCacheStats:
        return PrefixCacheStats(num_queried_tokens=10, num_hit_tokens=4)

    spec_decode_stats = SpecDecodeStats(num_drafts=2, num_draft_tokens=8, num_accepted_tokens=5)

    @property
    def num_running_requests(self) -> int:
        return len(self.requests)

    @property
    def num_waiting_requests(self) -> int:
        return 0

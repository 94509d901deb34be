"""The synchronous engine: add requests, step, read outputs."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.detokenizer import IncrementalDetokenizer
from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.model_setup import LoadedModel, load_model_for_engine
from pagedllm_core.engine.request import Request
from pagedllm_core.errors import ConfigError
from pagedllm_core.outputs import CompletionOutput, RequestOutput
from pagedllm_core.registry import PluginKind, Registry, default_registry
from pagedllm_core.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class KVCacheStats:
    """How full the KV pool is."""

    num_blocks: int
    num_used_blocks: int
    block_size: int

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks


class LLMEngine:
    """Owns the model, the KV pool and the scheduler; each ``step()`` runs one batch.

    The engine's surface (``add_request`` / ``abort_request`` / ``step``) is all a front end needs,
    so the same engine serves the offline ``LLM`` and the HTTP server.
    """

    def __init__(self, config: EngineConfig, registry: Registry | None = None):
        self.config = config
        registry = registry or default_registry()
        self.loaded: LoadedModel = load_model_for_engine(config, registry)
        self.tokenizer = self.loaded.tokenizer
        self.max_model_len = self.loaded.max_model_len
        self.kv_cache_manager = KVCacheManager(self.loaded.num_kv_blocks, config.block_size)
        self.scheduler = registry.resolve(PluginKind.SCHEDULER, config.scheduler)(config, self.kv_cache_manager)
        self.runner = self.loaded.runner
        self._requests: dict[str, Request] = {}
        self._detokenizers: dict[str, IncrementalDetokenizer] = {}
        self._prompts: dict[str, str | None] = {}
        self._arrival_counter = itertools.count()

    # -- requests -------------------------------------------------------------------------------

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        sampling_params: SamplingParams,
    ) -> None:
        """Tokenize (if text) and validate a request, then queue it for the scheduler."""
        if request_id in self._requests:
            raise ConfigError(f"request id {request_id!r} is already in use")
        prompt_text = prompt if isinstance(prompt, str) else None
        prompt_token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        self._validate_prompt(prompt_token_ids)
        room = self.max_model_len - len(prompt_token_ids)
        max_output_tokens = room if sampling_params.max_tokens is None else sampling_params.max_tokens
        if max_output_tokens > room:
            raise ConfigError(
                f"prompt ({len(prompt_token_ids)} tokens) plus max_tokens ({max_output_tokens}) exceeds the "
                f"model's context of {self.max_model_len} tokens; lower max_tokens to at most {room}"
            )
        request = Request(
            request_id,
            prompt_token_ids,
            sampling_params,
            max_output_tokens,
            self.loaded.eos_token_ids,
            next(self._arrival_counter),
        )
        self._requests[request_id] = request
        self._prompts[request_id] = prompt_text
        self._detokenizers[request_id] = IncrementalDetokenizer(
            self.tokenizer, prompt_token_ids, sampling_params.skip_special_tokens
        )
        self.scheduler.add_request(request)

    def _validate_prompt(self, prompt_token_ids: list[int]) -> None:
        if not prompt_token_ids:
            raise ConfigError("the prompt is empty; give at least one token")
        if len(prompt_token_ids) >= self.max_model_len:
            raise ConfigError(
                f"the prompt has {len(prompt_token_ids)} tokens but the context is {self.max_model_len} "
                f"tokens, which must leave room for at least one generated token"
            )
        vocab_size = self.loaded.vocab_size
        bad = [token for token in prompt_token_ids if not 0 <= token < vocab_size]
        if bad:
            raise ConfigError(f"prompt token ids must be in [0, {vocab_size}); got {bad[:5]}")

    def abort_request(self, request_ids: str | list[str]) -> list[RequestOutput]:
        """Stop these requests now and free their KV blocks; returns their final outputs."""
        if isinstance(request_ids, str):
            request_ids = [request_ids]
        aborted = self.scheduler.abort_requests(request_ids)
        return [self._finish(request) for request in aborted]

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    # -- stepping -------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one batch; returns an output for every request that produced a token this step."""
        scheduler_output = self.scheduler.schedule()
        if not scheduler_output.scheduled and self.scheduler.has_unfinished_requests():
            raise RuntimeError("scheduler made no progress although requests are waiting")  # pool sizing bug
        sampled_token_ids = self.runner.execute(scheduler_output)
        progressed = self.scheduler.update_from_output(scheduler_output, sampled_token_ids)
        outputs = []
        for request in progressed:
            self._detokenizers[request.request_id].add_tokens([request.token_ids[-1]])
            outputs.append(self._finish(request) if request.is_finished else self._output_of(request))
        return outputs

    def _output_of(self, request: Request) -> RequestOutput:
        finish_reason = request.status.value if request.is_finished else None
        completion = CompletionOutput(
            index=0,
            text=self._detokenizers[request.request_id].text,
            token_ids=request.output_token_ids,
            finish_reason=finish_reason,
            stop_reason=request.stop_reason,
        )
        return RequestOutput(
            request_id=request.request_id,
            prompt=self._prompts[request.request_id],
            prompt_token_ids=request.prompt_token_ids,
            outputs=[completion],
            finished=request.is_finished,
        )

    def _finish(self, request: Request) -> RequestOutput:
        output = self._output_of(request)
        del self._requests[request.request_id], self._prompts[request.request_id]
        del self._detokenizers[request.request_id]
        self.runner.release_request(request.request_id)
        return output

    # -- stats ----------------------------------------------------------------------------------

    def kv_cache_stats(self) -> KVCacheStats:
        return KVCacheStats(
            self.kv_cache_manager.num_blocks, self.kv_cache_manager.num_used_blocks, self.config.block_size
        )

    @property
    def num_running_requests(self) -> int:
        return self.scheduler.num_running_requests

    @property
    def num_waiting_requests(self) -> int:
        return self.scheduler.num_waiting_requests

    @property
    def device(self) -> torch.device:
        return self.runner.device

"""The synchronous engine: add requests, step, read outputs."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.beam_search import BeamSearch, BlockObserver
from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.model_setup import LoadedModel, load_model_for_engine
from pagedllm_core.engine.model_runner import StepResult, TokenLogprobs
from pagedllm_core.engine.prefix_cache import PrefixCacheStats
from pagedllm_core.engine.request import Request, RequestStatus
from pagedllm_core.engine.request_state import RequestState
from pagedllm_core.engine.scheduler import SchedulerOutput
from pagedllm_core.engine.structured_outputs import ConstraintCompiler
from pagedllm_core.errors import ConfigError
from pagedllm_core.outputs import BeamSearchOutput, RequestOutput
from pagedllm_core.registry import PluginKind, Registry, default_registry
from pagedllm_core.sampling.constraints import ConstraintState
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams
from pagedllm_core.structured_outputs import StructuredOutputsParams


@dataclass
class KVCacheStats:
    """How full the KV pool is, and how much block sharing saves."""

    num_blocks: int
    num_used_blocks: int
    # Blocks the running sequences' tables reference, counting a shared block once per holder.
    num_referenced_blocks: int
    block_size: int
    # Tokens whose keys and values are in the cache, summed over unfinished sequences like the above.
    num_computed_tokens: int

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
        self.kv_cache_manager = KVCacheManager(
            self.loaded.num_kv_blocks, config.block_size, enable_prefix_caching=config.enable_prefix_caching
        )
        self.scheduler = registry.resolve(PluginKind.SCHEDULER, config.scheduler)(config, self.kv_cache_manager)
        self.runner = self.loaded.runner
        self._states: dict[str, RequestState] = {}
        self._sequence_counter = itertools.count()
        self._decode_token = functools.lru_cache(maxsize=65536)(self._decode_one)
        self._beam_search = BeamSearch(
            self.runner, self.kv_cache_manager, self.tokenizer, self.loaded.eos_token_ids, config.max_num_batched_tokens
        )
        self.constraint_compiler = ConstraintCompiler(
            registry,
            config.structured_outputs_backend,
            self.tokenizer,
            self.loaded.vocab_size,
            self.loaded.eos_token_ids,
            config.structured_outputs_compile_timeout,
        )

    def _decode_one(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    # -- requests -------------------------------------------------------------------------------

    def add_request(self, request_id: str, prompt: str | list[int], sampling_params: SamplingParams) -> None:
        """Tokenize (if text) and validate a request, then queue it for the scheduler."""
        if request_id in self._states:
            raise ConfigError(f"request id {request_id!r} is already in use")
        prompt_token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        max_output_tokens = self._validate(prompt_token_ids, sampling_params)
        constraint = self._new_constraint_state(sampling_params.structured_outputs)
        first = Request(
            str(next(self._sequence_counter)),
            prompt_token_ids,
            sampling_params,
            max_output_tokens,
            self.loaded.eos_token_ids,
            group_id=request_id,
        )
        first.constraint = constraint
        prompt_text = prompt if isinstance(prompt, str) else None
        self._states[request_id] = RequestState(request_id, prompt_text, first, self.tokenizer, self._decode_token)
        self.scheduler.add_request(first)

    def beam_search(
        self, prompt: str | list[int], params: BeamSearchParams, observe: BlockObserver | None = None
    ) -> BeamSearchOutput:
        """Beam search for one prompt; runs to completion, so no other request may be in flight."""
        if self.has_unfinished_requests():
            raise ConfigError("beam search needs an idle engine; finish or abort the running requests first")
        prompt_token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        self._validate(prompt_token_ids, SamplingParams(max_tokens=params.max_tokens))
        constraint = self._new_constraint_state(params.structured_outputs)
        return self._beam_search.run(prompt_token_ids, params, observe, constraint)

    def precompile_structured_output(self, spec: StructuredOutputsParams) -> None:
        """Compile ``spec`` into the constraint cache now, from any thread, so that adding a request
        with it costs nothing on the stepping thread; raises the compile error."""
        self.constraint_compiler.compile(spec)

    def _new_constraint_state(self, spec: StructuredOutputsParams | None) -> ConstraintState | None:
        return None if spec is None else self.constraint_compiler.compile(spec).new_state()

    def _validate(self, prompt_token_ids: list[int], params: SamplingParams) -> int:
        """Check the request against the model; returns its output-token limit."""
        if not prompt_token_ids:
            raise ConfigError("the prompt is empty; give at least one token")
        if len(prompt_token_ids) >= self.max_model_len:
            raise ConfigError(
                f"the prompt has {len(prompt_token_ids)} tokens but the context is {self.max_model_len} "
                f"tokens, which must leave room for at least one generated token"
            )
        vocab_size = self.loaded.vocab_size
        for name, token_ids in (
            ("prompt token ids", prompt_token_ids),
            ("stop_token_ids", params.stop_token_ids),
            ("logit_bias token ids", list(params.logit_bias)),
        ):
            bad = [token for token in token_ids if not 0 <= token < vocab_size]
            if bad:
                raise ConfigError(f"{name} must be in [0, {vocab_size}); got {bad[:5]}")
        room = self.max_model_len - len(prompt_token_ids)
        max_output_tokens = room if params.max_tokens is None else params.max_tokens
        if max_output_tokens > room:
            raise ConfigError(
                f"prompt ({len(prompt_token_ids)} tokens) plus max_tokens ({max_output_tokens}) exceeds the "
                f"model's context of {self.max_model_len} tokens; lower max_tokens to at most {room}"
            )
        return max_output_tokens

    def abort_request(self, request_ids: str | list[str]) -> list[RequestOutput]:
        """Stop these requests now and free their KV blocks; returns their final outputs."""
        if isinstance(request_ids, str):
            request_ids = [request_ids]
        states = [self._states[request_id] for request_id in request_ids if request_id in self._states]
        sequence_ids = [request.request_id for state in states for request in state.unfinished_requests]
        self.scheduler.finish_requests(sequence_ids, RequestStatus.FINISHED_ABORTED)
        return [self._finish(state) for state in states]

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    # -- stepping -------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one batch; returns an output for every request that produced a token this step."""
        scheduler_output = self.scheduler.schedule()
        if not scheduler_output.scheduled and self.scheduler.has_unfinished_requests():
            raise RuntimeError("scheduler made no progress although requests are waiting")  # pool sizing bug
        result = self.runner.execute(scheduler_output)
        token_logprobs = _logprobs_by_sequence(scheduler_output, result)
        progressed = self.scheduler.update_from_output(scheduler_output, result.sampled_token_ids)

        for item in scheduler_output.scheduled:
            entries = result.prompt_logprobs.get(item.request.request_id)
            if entries:
                self._states[item.request.group_id].add_prompt_logprobs(entries)
        touched: dict[str, RequestState] = {}
        stopped: list[Request] = []
        for sequence in progressed:
            state = self._states[sequence.group_id]
            touched[sequence.group_id] = state
            token_id = sequence.token_ids[-1]
            if state.sequence(sequence).add_token(token_logprobs.get(sequence.request_id), token_id):
                stopped.append(sequence)
        if stopped:
            self.scheduler.finish_requests([s.request_id for s in stopped], RequestStatus.FINISHED_STOPPED)

        outputs = []
        for state in touched.values():
            if state.finished:
                outputs.append(self._finish(state))
            elif state.streams_progress:
                outputs.append(state.output())
        return outputs

    def _finish(self, state: RequestState) -> RequestOutput:
        del self._states[state.request_id]
        for sequence in state.sequences.values():
            self.runner.release_request(sequence.request)
        return state.output()

    # -- stats ----------------------------------------------------------------------------------

    def kv_cache_stats(self) -> KVCacheStats:
        manager = self.kv_cache_manager
        return KVCacheStats(
            manager.num_blocks,
            manager.num_used_blocks,
            sum(len(table) for table in manager.block_tables.values()),
            self.config.block_size,
            sum(seq.num_computed_tokens for state in self._states.values() for seq in state.unfinished_requests),
        )

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """Prefix cache queries and hits in tokens since start (zeros when prefix caching is off)."""
        return self.kv_cache_manager.prefix_cache_stats()

    @property
    def num_running_requests(self) -> int:
        return self.scheduler.num_running_requests

    @property
    def num_waiting_requests(self) -> int:
        return self.scheduler.num_waiting_requests

    @property
    def device(self) -> torch.device:
        return self.runner.device


def _logprobs_by_sequence(output: SchedulerOutput, result: StepResult) -> dict[str, TokenLogprobs]:
    """Sequence id -> the token it sampled this step (taken before forks change the requests)."""
    by_sequence = {}
    sampling = [item.request for item in output.scheduled if item.num_samples]
    for request, samples in zip(sampling, result.samples):
        for index, sample in enumerate(samples):
            by_sequence[request.request_id if index == 0 else request.child_id(index)] = sample
    return by_sequence

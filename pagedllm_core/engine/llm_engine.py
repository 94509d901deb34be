"""The synchronous engine: add requests, step, read outputs."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.beam_search import BeamSearchGroup
from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.prefix_cache import PrefixCacheStats
from pagedllm_core.engine.core_outputs import EngineCoreOutput, SequenceUpdate
from pagedllm_core.engine.output_processor import OutputProcessor
from pagedllm_core.engine.scheduler import StepPlan
from pagedllm_core.engine.sequence import Sequence, SequenceStatus
from pagedllm_core.engine.step_messages import StepMessageBuilder
from pagedllm_core.engine.structured_outputs import ConstraintCompiler
from pagedllm_core.errors import ConfigError
from pagedllm_core.executor.base import build_executor
from pagedllm_core.executor.messages import ModelRunnerOutput, TokenLogprobs, forked_seq_id
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.model import loader
from pagedllm_core.model.model_info import ModelInfo, resolve_model_info
from pagedllm_core.outputs import RequestOutput
from pagedllm_core.plugin_options import instantiate
from pagedllm_core.registry import PluginKind, Registry, default_registry
from pagedllm_core.sampling.constraints import ConstraintState
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams
from pagedllm_core.spec_decode.stats import SpecDecodeStats
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


@dataclass
class CoreRequest:
    """The core's side of a user request: its ``best_of`` sequences, by index."""

    first: Sequence
    sequences: dict[int, Sequence]

    @property
    def unfinished_sequences(self) -> list[Sequence]:
        return [sequence for sequence in self.sequences.values() if not sequence.is_finished]

    @property
    def finished(self) -> bool:
        all_forked = self.first.num_pending_forks == 0 or self.first.status is SequenceStatus.FINISHED_ABORTED
        return all_forked and not self.unfinished_sequences


class LLMEngine:
    """Owns the scheduler and the block manager, steps the workers through an executor, and turns
    what they produce into request outputs.

    The engine's surface (``add_request`` / ``abort_request`` / ``step``) is all a front end needs,
    so the same engine serves the offline ``LLM`` and the HTTP server. Each step the scheduler plans
    which sequences run, the plan becomes a step message, the executor runs it on the workers
    (in-process, or in worker processes), and the output advances the sequences: that is the core
    step (:meth:`step_core`), which yields token ids only. The :class:`OutputProcessor` then makes
    text, stop strings and logprobs of them (:meth:`process_outputs`); ``step`` runs both, while the
    async engine runs the second half on a thread of its own.
    """

    def __init__(self, config: EngineConfig, registry: Registry | None = None):
        self.config = config
        registry = registry or default_registry()
        self.model_info: ModelInfo = resolve_model_info(config)
        self.tokenizer = loader.load_tokenizer(self.model_info.source, config)
        self.eos_token_ids = eos_token_ids(self.tokenizer, self.model_info.hf_config)
        self.max_model_len = self.model_info.max_model_len
        self.vocab_size = self.model_info.vocab_size
        self.executor = build_executor(config, registry, self.model_info)
        self.kv_cache_manager = KVCacheManager(
            self.executor.num_kv_blocks, config.block_size, enable_prefix_caching=config.enable_prefix_caching
        )
        scheduler_class = registry.resolve(PluginKind.SCHEDULER, config.scheduler)
        self.scheduler = instantiate(
            PluginKind.SCHEDULER, config.scheduler, scheduler_class, config, config, self.kv_cache_manager
        )
        self.message_builder = StepMessageBuilder(self.kv_cache_manager.block_tables, config.block_size)
        self.output_processor = OutputProcessor(self.tokenizer)
        self._requests: dict[str, CoreRequest] = {}
        self._beam_groups: dict[str, BeamSearchGroup] = {}
        self._loras: dict[int, LoRARequest] = {}  # adapters loaded on the workers, by id
        self._sequence_counter = itertools.count()
        self.spec_decode_stats = SpecDecodeStats()
        self.constraint_compiler = ConstraintCompiler(
            registry,
            config.structured_outputs_backend,
            self.tokenizer,
            self.vocab_size,
            self.eos_token_ids,
            config.structured_outputs_compile_timeout,
        )

    def _new_seq_id(self) -> str:
        return str(next(self._sequence_counter))

    # -- requests -------------------------------------------------------------------------------

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | BeamSearchParams,
        lora_request: LoRARequest | None = None,
    ) -> None:
        """Tokenize (if text) and validate a request, then queue its first sequence for the scheduler.

        With :class:`BeamSearchParams` the request is a beam search: its beams run beside every other
        request and its one output, the best beams first, comes when the search ends. With
        ``lora_request`` every token runs through that LoRA adapter (loaded and checked here the first
        time it is named)."""
        prompt_token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        self.add_core_request(request_id, prompt_token_ids, params, lora_request)
        self.output_processor.add_request(
            request_id, prompt if isinstance(prompt, str) else None, prompt_token_ids, params
        )

    def add_core_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams | BeamSearchParams,
        lora_request: LoRARequest | None = None,
    ) -> None:
        """Validate a tokenized request and queue it in the core; whoever processes this engine's
        core outputs must be told of it too (:meth:`OutputProcessor.add_request`)."""
        if request_id in self._requests or request_id in self._beam_groups:
            raise ConfigError(f"request id {request_id!r} is already in use")
        if lora_request is not None:
            self.add_lora(lora_request)
        if isinstance(params, BeamSearchParams):
            self._add_beam_search(request_id, prompt_token_ids, params, lora_request)
            return
        max_output_tokens = self._validate(prompt_token_ids, params)
        constraint = self._new_constraint_state(params.structured_outputs)
        first = Sequence(
            self._new_seq_id(),
            prompt_token_ids,
            params,
            max_output_tokens,
            self.eos_token_ids,
            request_id=request_id,
            lora_request=lora_request,
        )
        first.constraint = constraint
        self._requests[request_id] = CoreRequest(first, {0: first})
        self.scheduler.add_sequence(first)

    def _add_beam_search(
        self, request_id: str, prompt_token_ids: list[int], params: BeamSearchParams, lora_request: LoRARequest | None
    ) -> None:
        sampling_params = SamplingParams(temperature=params.temperature, max_tokens=params.max_tokens, ignore_eos=True)
        self._validate(prompt_token_ids, sampling_params)
        root = Sequence(
            self._new_seq_id(),
            prompt_token_ids,
            sampling_params,
            params.max_tokens,
            frozenset(),
            request_id=request_id,
            lora_request=lora_request,
        )
        root.constraint = self._new_constraint_state(params.structured_outputs)
        self._beam_groups[request_id] = BeamSearchGroup(
            request_id, root, params, self.eos_token_ids, self._new_seq_id
        )
        self.scheduler.add_sequence(root)

    # -- LoRA adapters --------------------------------------------------------------------------

    def add_lora(self, lora_request: LoRARequest) -> bool:
        """Load and check an adapter on the workers (``ConfigError`` naming what is wrong); False if it
        is loaded already. An id stands for one adapter: naming it with another name or path is an error."""
        if not self.config.enable_lora:
            raise ConfigError("a LoRA adapter was requested but LoRA is off; start the engine with enable_lora=True")
        known = self._loras.get(lora_request.lora_int_id)
        if known is not None:
            if (known.lora_name, known.lora_path) != (lora_request.lora_name, lora_request.lora_path):
                raise ConfigError(
                    f"lora_int_id {lora_request.lora_int_id} is already adapter {known.lora_name!r} at "
                    f"{known.lora_path!r}; give this adapter another id"
                )
            return False
        added = self.executor.add_lora(lora_request)
        self._loras[lora_request.lora_int_id] = lora_request
        return added

    def remove_lora(self, lora_int_id: int) -> bool:
        """Drop an adapter from the workers' memory; requests still running with it reload it."""
        if self._loras.pop(lora_int_id, None) is None:
            return False
        return self.executor.remove_lora(lora_int_id)

    def list_loras(self) -> set[int]:
        return set(self._loras)

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
        vocab_size = self.vocab_size
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
        return self.process_outputs(self.abort_core_requests(request_ids))

    def abort_core_requests(self, request_ids: str | list[str]) -> list[EngineCoreOutput]:
        """Stop these requests in the core and free their KV blocks (unknown ids are ignored)."""
        if isinstance(request_ids, str):
            request_ids = [request_ids]
        outputs = []
        for request_id in request_ids:
            request = self._requests.pop(request_id, None)
            group = self._beam_groups.get(request_id)
            if request is not None:
                unfinished = request.unfinished_sequences
                self._finish_sequences(unfinished, SequenceStatus.FINISHED_ABORTED)
                updates = [SequenceUpdate(sequence.index, [], finish_reason="abort") for sequence in unfinished]
                outputs.append(EngineCoreOutput(request_id, updates, finished=True))
            elif group is not None:
                outputs.append(self._finish_beam_search(group, aborted=True))
        return outputs

    def finish_stopped_sequences(self, stopped: list[tuple[str, int, str]]) -> None:
        """End the sequences whose text reached a stop string, as (request id, sequence index, stop string)."""
        for request_id, index, stop in stopped:
            request = self._requests.get(request_id)
            sequence = None if request is None else request.sequences.get(index)
            if sequence is None or sequence.is_finished:
                continue
            sequence.stop_reason = stop
            self._finish_sequences([sequence], SequenceStatus.FINISHED_STOPPED)
            if request.finished:
                del self._requests[request_id]

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_sequences()

    def _finish_sequences(self, sequences: list[Sequence], status: SequenceStatus) -> None:
        seq_ids = [sequence.seq_id for sequence in sequences]
        self.scheduler.finish_sequences(seq_ids, status)
        self.message_builder.finish(seq_ids)

    # -- stepping -------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one batch; returns an output for every request that produced a token this step, and
        the final output of every beam search that ended."""
        return self.process_outputs(self.step_core())

    def process_outputs(self, core_outputs: list[EngineCoreOutput]) -> list[RequestOutput]:
        """Make request outputs of core outputs right away, telling the core of stop strings found."""
        processed = self.output_processor.process(core_outputs)
        self.finish_stopped_sequences(processed.stopped)
        self.abort_core_requests(processed.failed)
        return processed.outputs

    def step_core(self) -> list[EngineCoreOutput]:
        """Schedule, run the workers and advance the sequences: one output per request that got
        tokens (or prompt logprobs) this step, failed, or ended a beam search. No text is made here."""
        plan = self.scheduler.schedule()
        if not plan.scheduled and self.scheduler.has_unfinished_sequences():
            raise RuntimeError("scheduler made no progress although requests are waiting")  # pool sizing bug
        result = self.executor.execute_model(self.message_builder.build(plan))
        # Only a verified speculative run can add more than one token to a sequence in a step.
        num_tokens_before = {
            item.sequence.seq_id: item.sequence.num_tokens for item in plan.scheduled if item.spec_token_ids
        }
        progressed = self.scheduler.update_from_output(plan, result.sampled_token_ids)
        if self.config.speculative_config is not None:
            self._take_drafts(plan, result)
        self.message_builder.finish([sequence.seq_id for sequence in progressed if sequence.is_finished])
        failures = {item.sequence.request_id: item.sequence.failure for item in plan.scheduled if item.sequence.failure}
        failures.update({self._request_of(plan, seq_id): message for seq_id, message in result.failed.items()})
        outputs = self._fail_requests(failures)
        progressed = [sequence for sequence in progressed if sequence.request_id not in failures]
        outputs += self._token_outputs(plan, result, progressed, failures, num_tokens_before)
        if result.beam_candidates:
            outputs.extend(self._advance_beam_searches(plan, result.beam_candidates))
        return outputs

    def _take_drafts(self, plan: StepPlan, result: ModelRunnerOutput) -> None:
        """Count the step's verified drafts, and give each sequence the drafts proposed for its next step."""
        for item in plan.scheduled:
            if item.spec_token_ids and item.sequence.seq_id in result.samples:
                self.spec_decode_stats.record(len(item.spec_token_ids), len(result.samples[item.sequence.seq_id]) - 1)
            item.sequence.spec_token_ids = result.draft_token_ids.get(item.sequence.seq_id, [])

    @staticmethod
    def _request_of(plan: StepPlan, seq_id: str) -> str:
        return next(item.sequence.request_id for item in plan.scheduled if item.sequence.seq_id == seq_id)

    def _fail_requests(self, failures: dict[str, str]) -> list[EngineCoreOutput]:
        """End the requests whose own sequences failed; the rest of the batch goes on."""
        outputs = []
        for request_id, message in failures.items():
            for output in self.abort_core_requests(request_id):
                output.error = message
                outputs.append(output)
        return outputs

    def _token_outputs(
        self,
        plan: StepPlan,
        result: ModelRunnerOutput,
        progressed: list[Sequence],
        failures: dict[str, str],
        num_tokens_before: dict[str, int],
    ) -> list[EngineCoreOutput]:
        """Group the step's new tokens (one, or a verified speculative run), their logprobs and prompt
        logprobs by request."""
        by_request: dict[str, EngineCoreOutput] = {}

        def output_of(request_id: str) -> EngineCoreOutput:
            output = by_request.get(request_id)
            if output is None:
                output = by_request[request_id] = EngineCoreOutput(request_id)
            return output

        for item in plan.scheduled:
            entries = result.prompt_logprobs.get(item.sequence.seq_id)
            if entries and item.sequence.request_id not in failures:
                output_of(item.sequence.request_id).prompt_logprobs.extend(entries)
        token_logprobs = _logprobs_by_sequence(result)
        for sequence in progressed:
            request = self._requests[sequence.request_id]
            request.sequences.setdefault(sequence.index, sequence)  # a sibling forked this step
            # One new token, unless a verified run (a sequence forked this step has exactly its first token).
            before = num_tokens_before.get(sequence.seq_id)
            num_new_tokens = 1 if before is None else sequence.num_tokens - before
            if num_new_tokens > 1:
                logprobs = result.samples[sequence.seq_id]
            else:
                token = token_logprobs.get(sequence.seq_id)
                logprobs = None if token is None else [token]
            finished = sequence.is_finished
            output_of(sequence.request_id).updates.append(
                SequenceUpdate(
                    sequence.index,
                    sequence.token_ids[-num_new_tokens:],
                    logprobs,
                    sequence.status.value if finished else None,
                    sequence.stop_reason if finished else None,
                )
            )
        for request_id, output in by_request.items():
            if self._requests[request_id].finished:
                del self._requests[request_id]
                output.finished = True
        return list(by_request.values())

    def _advance_beam_searches(self, plan: StepPlan, candidates: dict[str, list[tuple[int, float]]]) -> list[EngineCoreOutput]:
        beams = {item.sequence.seq_id: item.sequence for item in plan.scheduled if item.sequence.beam_group is not None}
        outputs = []
        for seq_id, beam_candidates in candidates.items():
            group = beams[seq_id].beam_group
            if group.request_id not in self._beam_groups:
                continue  # the search failed or was aborted during this step
            if not group.add_candidates(seq_id, beam_candidates):
                continue
            step = group.advance()
            for parent, child in step.forks:
                self.scheduler.add_forked_sequence(parent, child)
            self._finish_sequences(step.pruned, SequenceStatus.FINISHED_PRUNED)
            if step.done:
                outputs.append(self._finish_beam_search(group))
        return outputs

    def _finish_beam_search(self, group: BeamSearchGroup, aborted: bool = False) -> EngineCoreOutput:
        del self._beam_groups[group.request_id]
        status = SequenceStatus.FINISHED_ABORTED if aborted else SequenceStatus.FINISHED_PRUNED
        self._finish_sequences(group.live_sequences, status)
        return EngineCoreOutput(group.request_id, finished=True, beams=group.best_hypotheses(aborted))

    # -- stats ----------------------------------------------------------------------------------

    def kv_cache_stats(self) -> KVCacheStats:
        manager = self.kv_cache_manager
        unfinished = [
            *(sequence for request in self._requests.values() for sequence in request.unfinished_sequences),
            *(sequence for group in self._beam_groups.values() for sequence in group.live_sequences),
        ]
        return KVCacheStats(
            manager.num_blocks,
            manager.num_used_blocks,
            sum(len(table) for table in manager.block_tables.values()),
            self.config.block_size,
            sum(sequence.num_computed_tokens for sequence in unfinished),
        )

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """Prefix cache queries and hits in tokens since start (zeros when prefix caching is off)."""
        return self.kv_cache_manager.prefix_cache_stats()

    @property
    def num_running_requests(self) -> int:
        return self.scheduler.num_running_sequences

    @property
    def num_waiting_requests(self) -> int:
        return self.scheduler.num_waiting_sequences

    @property
    def device(self) -> torch.device:
        return self.model_info.device

    def shutdown(self) -> None:
        """Stop the executor's workers; the engine cannot step afterwards."""
        self.executor.shutdown()


def eos_token_ids(tokenizer, hf_config) -> frozenset[int]:
    """The tokenizer's EOS plus every EOS the model config lists (some models end turns with several)."""
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(hf_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(value)
    return frozenset(ids)


def _logprobs_by_sequence(result: ModelRunnerOutput) -> dict[str, TokenLogprobs]:
    """Sequence id -> the token it sampled this step; a forking sequence's extra samples go to its siblings."""
    by_sequence = {}
    for seq_id, samples in result.samples.items():
        for index, sample in enumerate(samples):
            by_sequence[seq_id if index == 0 else forked_seq_id(seq_id, index)] = sample
    return by_sequence

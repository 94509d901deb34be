"""The one place that turns a step message into tensors, runs the model and samples."""

from __future__ import annotations

import torch

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.executor.messages import ModelRunnerOutput, SchedulerOutput, TokenLogprobs, forked_seq_id
from pagedllm_core.model.lora import LoRAManager
from pagedllm_core.model.native_decode import NativeDecoder, forward_prepared_step
from pagedllm_core.sampling.constraints import packed_bitmasks_from_bytes, unpack_token_bitmask
from pagedllm_core.sampling.pipeline import sample_tokens
from pagedllm_core.sampling.sampler import Sampler, SamplerOutput, score_tokens
from pagedllm_core.worker.cuda_graphs import DecodeGraphs
from pagedllm_core.worker.input_batch import HeldSequence, InputBatch
from pagedllm_core.worker.sampling_metadata import SamplingRow, build_sampling_metadata


class ModelRunner:
    """Runs the model on the flattened tokens of a step over the paged KV cache.

    It keeps the :class:`InputBatch` of the sequences the engine has sent and applies each message's
    deltas to it; a step's inputs are then gathered from the batch's tensors.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        attention: AttentionBackend,
        sampler: Sampler,
        kv_cache: torch.Tensor,
        block_size: int,
        vocab_size: int,
        max_model_len: int,
        device: torch.device,
        lora_manager: LoRAManager | None = None,
    ):
        self.model = model
        self.attention = attention
        self.sampler = sampler
        self.kv_cache = kv_cache
        self.kv_caches = list(kv_cache.unbind(0))
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.device = device
        self.lora_manager = lora_manager
        self.batch = InputBatch(max_model_len, -(-max_model_len // block_size), vocab_size)
        self._generators: dict[str, torch.Generator] = {}
        # Set at start-up on CUDA unless enforce_eager (pagedllm_core/worker/cuda_graphs.py).
        self.decode_graphs: DecodeGraphs | None = None
        # Set at start-up on the CPU unless enforce_eager (pagedllm_core/model/native_decode.py).
        self.native_decoder: NativeDecoder | None = None
        # Speculative decoding (pagedllm_core.spec_decode.speculator.Speculator), set at start-up when configured.
        self.speculator = None

    @torch.inference_mode()
    def execute(self, message: SchedulerOutput) -> ModelRunnerOutput:
        """Apply the message to the batch, then copy-on-write copies, the forward pass, prompt logprobs, sampling."""
        scheduled = self._update_batch(message)
        self._copy_blocks(message.block_copies)
        result = ModelRunnerOutput()
        if not scheduled:
            return result
        hidden_states, query_start = self._forward(scheduled)
        self._add_prompt_logprobs(scheduled, hidden_states, query_start, result)

        sample_rows: list[int] = []
        rows: list[SamplingRow] = []
        beam_rows: list[int] = []
        beams: list[HeldSequence] = []
        verified: list[tuple[HeldSequence, int]] = []
        for i, (held, _, num_samples) in enumerate(scheduled):
            if not num_samples:
                continue
            last_row = query_start[i + 1] - 1
            if held.spec_token_ids:
                verified.append((held, last_row - len(held.spec_token_ids)))
                continue
            if held.num_beam_candidates:
                beam_rows.append(last_row)
                beams.append(held)
                continue
            bitmask = message.allowed_token_bitmasks.get(held.seq_id)
            for index in range(num_samples):
                sample_rows.append(last_row)
                rows.append(SamplingRow(held, self._generator_for(held, index), bitmask))
        if rows:
            every_row = sample_rows == list(range(hidden_states.shape[0]))
            # A plain decode step samples every row once, in order: no gather of the rows.
            self._sample(rows, self.model.compute_logits(hidden_states if every_row else hidden_states[sample_rows]), result)
        if beams:
            self._score_beam_candidates(beams, hidden_states[beam_rows], message, result)
        if verified:
            self.speculator.verify(self, verified, hidden_states, result)
        if self.speculator is not None:
            self.speculator.propose(self, scheduled, message, result)
        return result

    def _sample(self, rows: list[SamplingRow], logits: torch.Tensor, result: ModelRunnerOutput) -> None:
        """Sample every row at once; if that fails, row by row, so that only the sequences whose own
        settings or state make sampling fail are reported as failed (and the others still get a token)."""
        try:
            samples = self._sample_rows(rows, logits)
        except Exception:  # noqa: BLE001 - isolated below, row by row
            samples = []
            for index, row in enumerate(rows):
                try:
                    samples += self._sample_rows([row], logits[index : index + 1])
                except Exception as error:  # noqa: BLE001 - one sequence's failure, reported as such
                    result.failed[row.sequence.seq_id] = f"sampling failed: {type(error).__name__}: {error}"
                    samples.append(None)
        for row, sample in zip(rows, samples):
            if sample is not None and row.sequence.seq_id not in result.failed:
                result.samples.setdefault(row.sequence.seq_id, []).append(sample)

    def _sample_rows(self, rows: list[SamplingRow], logits: torch.Tensor) -> list[TokenLogprobs]:
        metadata = build_sampling_metadata(self.batch, rows, self.device)
        return _to_token_logprobs(sample_tokens(self.sampler, logits, metadata))

    def _update_batch(self, message: SchedulerOutput) -> list[tuple[HeldSequence, int, int]]:
        """Forget finished and preempted sequences, take in new ones and deltas; returns the step's
        sequences in token order as (sequence, new tokens, output rows)."""
        for seq_id in message.finished_seq_ids:
            self.batch.remove(seq_id)
            self._generators.pop(seq_id, None)
        for seq_id in message.preempted_seq_ids:
            self.batch.remove(seq_id)
        scheduled = [(self.batch.add(data), data.num_new_tokens, data.num_samples) for data in message.new_sequences]
        updated = self.batch.update_all(message.cached_sequences)
        scheduled += [(held, data.num_new_tokens, data.num_samples) for held, data in zip(updated, message.cached_sequences)]
        return scheduled

    def _copy_blocks(self, block_copies: list[tuple[int, int]]) -> None:
        if block_copies:
            self.attention.copy_blocks(self.kv_cache, block_copies)
            if self.speculator is not None:
                self.speculator.proposer.copy_blocks(block_copies)

    def _forward(self, scheduled) -> tuple[torch.Tensor, list[int]]:
        input_ids, positions, metadata, query_start = self._prepare_inputs(scheduled)
        if self.lora_manager is not None:
            self._set_lora_adapters(scheduled)
        if self.decode_graphs is not None and self.decode_graphs.bucket(metadata) is not None:
            return self.decode_graphs.run(input_ids, positions, metadata), query_start
        self.attention.prepare(metadata)
        hidden_states = forward_prepared_step(
            self.model, self.native_decoder, input_ids, positions, self.kv_caches, metadata
        )
        return hidden_states, query_start

    def _set_lora_adapters(self, scheduled) -> None:
        """Tell the LoRA manager every token's adapter id (its sequence's, from the batch)."""
        slots = torch.tensor([held.slot for held, _, _ in scheduled], dtype=torch.int64)
        num_new_tokens = torch.tensor([count for _, count, _ in scheduled], dtype=torch.int64)
        token_lora_ids = torch.repeat_interleave(self.batch.lora_int_ids[slots], num_new_tokens)
        requests = {held.lora_request.lora_int_id: held.lora_request for held, _, _ in scheduled if held.lora_request}
        self.lora_manager.set_step_adapters(token_lora_ids, requests)

    def _prepare_inputs(self, scheduled):
        if all(count == 1 for _, count, _ in scheduled):
            return self._prepare_decode_inputs(scheduled)
        return self._prepare_chunk_inputs(scheduled)

    def _prepare_decode_inputs(self, scheduled):
        """:meth:`_prepare_chunk_inputs` for a step of one new token per sequence (a plain decode step):
        each token's position is its sequence's computed length, so nothing is expanded per token."""
        slots = torch.tensor([held.slot for held, _, _ in scheduled], dtype=torch.int64)
        positions = torch.tensor([held.num_computed_tokens for held, _, _ in scheduled], dtype=torch.int64)
        width = max(held.num_blocks for held, _, _ in scheduled)
        block_tables = self.batch.block_table[slots, :width]
        slot_mapping = (
            self.batch.block_table[slots, positions // self.block_size].long() * self.block_size
            + positions % self.block_size
        )
        metadata = AttentionMetadata(
            slot_mapping=slot_mapping.to(self.device),
            query_start_loc=torch.arange(len(scheduled) + 1, dtype=torch.int32).to(self.device),
            seq_lens=(positions + 1).to(torch.int32).to(self.device),
            block_tables=block_tables.to(self.device),
            max_query_len=1,
            max_seq_len=max(held.num_computed_tokens for held, _, _ in scheduled) + 1,
        )
        input_ids = self.batch.token_ids[slots, positions]
        return input_ids.to(self.device), positions.to(self.device), metadata, list(range(len(scheduled) + 1))

    def _prepare_chunk_inputs(self, scheduled):
        slots = torch.tensor([held.slot for held, _, _ in scheduled], dtype=torch.int64)
        computed = torch.tensor([held.num_computed_tokens for held, _, _ in scheduled], dtype=torch.int64)
        num_new_tokens = [count for _, count, _ in scheduled]
        query_lens = torch.tensor(num_new_tokens, dtype=torch.int64)
        query_start_loc = torch.zeros(len(scheduled) + 1, dtype=torch.int64)
        torch.cumsum(query_lens, dim=0, out=query_start_loc[1:])
        num_tokens = int(query_start_loc[-1])
        # Each token's sequence and position, derived with tensor ops rather than per-sequence loops.
        token_seq = torch.repeat_interleave(torch.arange(len(scheduled)), query_lens)
        positions = computed[token_seq] + torch.arange(num_tokens) - query_start_loc[token_seq]
        input_ids = self.batch.token_ids[slots[token_seq], positions]
        width = max(held.num_blocks for held, _, _ in scheduled)
        block_tables = self.batch.block_table[slots, :width]
        slot_mapping = (
            block_tables[token_seq, positions // self.block_size].long() * self.block_size + positions % self.block_size
        )
        seq_lens = computed + query_lens
        metadata = AttentionMetadata(
            slot_mapping=slot_mapping.to(self.device),
            query_start_loc=query_start_loc.to(torch.int32).to(self.device),
            seq_lens=seq_lens.to(torch.int32).to(self.device),
            block_tables=block_tables.to(self.device),
            max_query_len=max(num_new_tokens),
            max_seq_len=int(seq_lens.max()),
        )
        return input_ids.to(self.device), positions.to(self.device), metadata, query_start_loc.tolist()

    def _add_prompt_logprobs(self, scheduled, hidden_states, query_start: list[int], result: ModelRunnerOutput):
        """Score each prompt token (from the second on) that this step's prompt chunks predict."""
        for i, (held, num_new_tokens, _) in enumerate(scheduled):
            num_logprobs = held.sampling_params.prompt_logprobs
            first = held.num_computed_tokens
            # Hidden state at position p predicts prompt token p + 1.
            last = min(first + num_new_tokens, held.num_prompt_tokens - 1)
            if num_logprobs is None or first >= last:
                continue
            rows = slice(query_start[i], query_start[i] + last - first)
            logprobs = self.model.compute_logits(hidden_states[rows]).log_softmax(dim=-1)
            targets = self.batch.token_ids[held.slot, first + 1 : last + 1].to(logprobs.device)
            entries = _to_token_logprobs(score_tokens(logprobs, targets, num_logprobs))
            result.prompt_logprobs[held.seq_id] = list(zip(range(first + 1, last + 1), entries))

    def _score_beam_candidates(self, beams, hidden_states, message: SchedulerOutput, result: ModelRunnerOutput):
        """Each beam's best next tokens under ``log_softmax(logits / temperature)``, inside its constraint."""
        logits = self.model.compute_logits(hidden_states)
        temperature = torch.tensor([held.sampling_params.temperature or 1.0 for held in beams], device=logits.device)
        logprobs = (logits / temperature.unsqueeze(-1)).log_softmax(dim=-1)
        for row, held in enumerate(beams):
            bitmask = message.allowed_token_bitmasks.get(held.seq_id)
            if bitmask is not None:
                allowed = unpack_token_bitmask(packed_bitmasks_from_bytes([bitmask]), self.vocab_size)[0]
                allowed = allowed.to(logprobs.device)
                logprobs[row] = logprobs[row].masked_fill(~allowed, float("-inf"))
        num_candidates = max(held.num_beam_candidates for held in beams)
        top_logprobs, top_ids = logprobs.topk(min(num_candidates, logprobs.shape[-1]), dim=-1)
        for held, ids, values in zip(beams, top_ids.tolist(), top_logprobs.tolist()):
            result.beam_candidates[held.seq_id] = list(zip(ids, values))[: held.num_beam_candidates]

    def _generator_for(self, held: HeldSequence, sample_index: int) -> torch.Generator | None:
        """The seeded generator of the sequence (``sample_index`` 0) or of the sibling it forks."""
        seed = held.sampling_params.seed
        if seed is None:
            return None
        index = held.index if sample_index == 0 else sample_index
        key = held.seq_id if sample_index == 0 else forked_seq_id(held.seq_id, sample_index)
        generator = self._generators.get(key)
        if generator is None:
            generator = torch.Generator(device=self.device)
            # Sibling sequences of one seeded request each get their own, still reproducible, stream.
            generator.manual_seed(seed if index == 0 else hash((seed, index)) % 2**63)
            self._generators[key] = generator
        return generator


def _to_token_logprobs(scored: SamplerOutput) -> list[TokenLogprobs]:
    """Move a batch of scored tokens to Python in one transfer per tensor; rows whose logprob was not
    computed (nobody needed it) carry ``None``."""
    token_ids = scored.token_ids.tolist()
    logprobs = [None] * len(token_ids)
    if scored.logprobs is not None:
        rows = range(len(token_ids)) if scored.logprob_rows is None else scored.logprob_rows
        for row, logprob in zip(rows, scored.logprobs.tolist()):
            logprobs[row] = logprob
    ranks = scored.ranks.tolist() if scored.ranks is not None else [None] * len(token_ids)
    entries = [TokenLogprobs(*values) for values in zip(token_ids, logprobs, ranks)]
    if scored.top_token_ids is not None:
        for entry, ids, values in zip(entries, scored.top_token_ids.tolist(), scored.top_logprobs.tolist()):
            entry.top = list(zip(ids, values))
    return entries

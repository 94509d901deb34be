"""The worker's side of speculative decoding: verify the drafts a step carries, propose the next ones."""

from __future__ import annotations

from typing import Protocol

import torch

from pagedllm_core.default_plugins.default_sampler import sampling_probs
from pagedllm_core.executor.messages import ModelRunnerOutput, SchedulerOutput
from pagedllm_core.sampling.pipeline import process_logits
from pagedllm_core.sampling.sampler import argmax_rows, score_sampled_tokens
from pagedllm_core.spec_decode.config import SpeculativeConfig
from pagedllm_core.spec_decode.ngram import propose_ngram
from pagedllm_core.spec_decode.rejection_sampler import rejection_sample, verify_greedy
from pagedllm_core.worker.input_batch import HeldSequence
from pagedllm_core.worker.model_runner import ModelRunner, _to_token_logprobs
from pagedllm_core.worker.sampling_metadata import SamplingRow, build_sampling_metadata

# (sequence, its new-token rows this step, the tokens it emitted this step, whether it gets drafts)
StepEntry = tuple[HeldSequence, int, list[int], bool]


class Proposer(Protocol):
    """Drafts tokens for the sequences of a step that just ran."""

    def propose(self, runner: ModelRunner, entries: list[StepEntry], num_tokens: int) -> dict[str, list[int]]:
        """Up to ``num_tokens`` drafts per entry that gets drafts, by seq id. The batch's token rows
        already hold each sequence's emitted tokens after its known ones."""

    def copy_blocks(self, block_copies: list[tuple[int, int]]) -> None:
        """Copy-on-write in the proposer's own KV cache, if it keeps one (the same copies as the target's)."""


class Speculator:
    """Verifies the drafts in one target pass and asks its proposer for the next step's drafts.

    A sequence gets drafts when it sampled its own token and nothing position-dependent edits its
    logits: not a beam, no penalties, no structured output, at least ``min_tokens`` generated.
    Others decode one token per step as usual."""

    def __init__(self, config: SpeculativeConfig, proposer: Proposer, seed: int):
        self.config = config
        self.proposer = proposer
        self._generator: torch.Generator | None = None
        self._seed = seed

    def _shared_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self._seed)
        return self._generator

    def verify(
        self, runner: ModelRunner, items: list[tuple[HeldSequence, int]], hidden_states, result: ModelRunnerOutput
    ) -> None:
        """Score each sequence's last token and drafts (its rows from ``first_row`` on) and put its
        run, the accepted drafts and one more token with their logprobs, in ``result.samples``."""
        rows, sampling_rows = [], []
        for held, first_row in items:
            num_rows = len(held.spec_token_ids) + 1
            rows.extend(range(first_row, first_row + num_rows))
            sampling_rows += [SamplingRow(held, runner._generator_for(held, 0))] * num_rows
        logits = runner.model.compute_logits(hidden_states[rows])
        metadata = build_sampling_metadata(runner.batch, sampling_rows, runner.device)
        processed = process_logits(logits, metadata)
        target_ids = argmax_rows(processed).tolist()
        probs = None
        if not metadata.all_greedy:
            probs = sampling_probs(processed, metadata)
            probs = probs / probs.sum(dim=-1, keepdim=True)
        runs, scored_rows = [], []
        offset = 0
        for held, _ in items:
            num_rows = len(held.spec_token_ids) + 1
            if held.sampling_params.is_greedy:
                run = verify_greedy(target_ids[offset : offset + num_rows], held.spec_token_ids)
            else:
                generator = sampling_rows[offset].generator or self._shared_generator(probs.device)
                run = rejection_sample(probs[offset : offset + num_rows], held.spec_token_ids, None, generator)
            runs.append(run)
            scored_rows.extend(range(offset, offset + len(run)))
            offset += num_rows
        token_ids = torch.tensor([token for run in runs for token in run], device=logits.device)
        entries = _to_token_logprobs(score_sampled_tokens(logits[scored_rows], token_ids, metadata.max_num_logprobs))
        for (held, _), run in zip(items, runs):
            result.samples[held.seq_id], entries = entries[: len(run)], entries[len(run) :]

    def propose(self, runner: ModelRunner, scheduled, message: SchedulerOutput, result: ModelRunnerOutput) -> None:
        """Write each sequence's emitted tokens after its known ones in the batch, then draft for the
        next step into ``result.draft_token_ids``."""
        entries: list[StepEntry] = []
        for held, num_new_tokens, _ in scheduled:
            samples = result.samples.get(held.seq_id) if held.seq_id not in result.failed else None
            # A forking sequence's extra samples belong to its siblings.
            own_samples = (samples if held.spec_token_ids else samples[:1]) if samples else []
            run = [sample.token_id for sample in own_samples]
            if run:
                start = held.num_tokens
                runner.batch.token_ids[held.slot, start : start + len(run)] = torch.tensor(run, dtype=torch.int64)
            entries.append((held, num_new_tokens, run, _gets_drafts(held, run, message)))
        result.draft_token_ids = self.proposer.propose(runner, entries, self.config.num_speculative_tokens)


def _gets_drafts(held: HeldSequence, run: list[int], message: SchedulerOutput) -> bool:
    return (
        bool(run)
        and held.num_beam_candidates == 0
        and held.output_token_counts is None
        and held.seq_id not in message.allowed_token_bitmasks
        and held.num_output_tokens + len(run) >= held.sampling_params.min_tokens
    )


class NgramProposer:
    """Prompt lookup over each sequence's prompt and output (see :func:`propose_ngram`)."""

    def __init__(self, config: SpeculativeConfig, max_model_len: int):
        self.min_n, self.max_n = config.lookup_range
        self.max_model_len = max_model_len

    def copy_blocks(self, block_copies: list[tuple[int, int]]) -> None:
        """Prompt lookup keeps no KV cache."""

    def propose(self, runner: ModelRunner, entries: list[StepEntry], num_tokens: int) -> dict[str, list[int]]:
        drafts = {}
        for held, _, run, gets_drafts in entries:
            length = held.num_tokens + len(run)
            room = min(num_tokens, self.max_model_len - length)
            if gets_drafts and room > 0:
                token_ids = runner.batch.token_ids[held.slot, :length].numpy()
                proposed = propose_ngram(token_ids, self.min_n, self.max_n, room)
                if proposed:
                    drafts[held.seq_id] = proposed
        return drafts

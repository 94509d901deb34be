"""Beam search over the paged KV cache: beams fork blocks from their parents and drop them when pruned."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.model_runner import ModelRunner
from pagedllm_core.engine.request import Request
from pagedllm_core.engine.scheduler import ScheduledRequest, SchedulerOutput
from pagedllm_core.errors import ConfigError
from pagedllm_core.outputs import BeamSearchOutput, BeamSearchSequence
from pagedllm_core.sampling.constraints import ConstraintState, unpack_token_bitmask
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams

# Called after every decode step with (blocks in use, blocks the beams' tables reference).
BlockObserver = Callable[[int, int], None]


@dataclass
class _Beam:
    request: Request
    cum_logprob: float


@dataclass
class _Hypothesis:
    tokens: list[int]
    cum_logprob: float
    score: float
    finish_reason: str


class BeamSearch:
    """Runs beam search for one prompt at a time on an engine's runner and KV cache manager.

    Candidates are scored as in Hugging Face's beam search: each step takes the ``2 * beam_width``
    best (beam, token) pairs by cumulative logprob; an EOS among the first ``beam_width`` finishes a
    hypothesis, the rest become the next beams. The engine must have no other requests running.
    With a constraint, each beam carries its own automaton state: candidates are drawn from the
    tokens it allows, and a beam whose output can only end becomes a finished hypothesis.
    """

    def __init__(
        self,
        runner: ModelRunner,
        kv_cache_manager: KVCacheManager,
        tokenizer,
        eos_token_ids: frozenset[int],
        max_num_batched_tokens: int,
    ):
        self.runner = runner
        self.kv_cache_manager = kv_cache_manager
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_num_batched_tokens = max_num_batched_tokens
        self._ids = itertools.count()

    def run(
        self,
        prompt_token_ids: list[int],
        params: BeamSearchParams,
        observe: BlockObserver | None = None,
        constraint: ConstraintState | None = None,
    ) -> BeamSearchOutput:
        root = Request(
            f"beam-{next(self._ids)}", prompt_token_ids, SamplingParams(max_tokens=params.max_tokens),
            params.max_tokens, frozenset(),
        )
        root.constraint = constraint
        beams = [_Beam(root, 0.0)]
        try:
            logprobs = self._prefill(root, params.temperature)
            finished: list[_Hypothesis] = []
            for step in range(params.max_tokens):
                candidates = self._select(beams, logprobs, params, finished, len(prompt_token_ids))
                if self._done(finished, candidates, params, step + 1):
                    break
                beams = self._retire_completed(self._advance(beams, candidates), finished, params, len(prompt_token_ids))
                if not beams:
                    break
                if step + 1 == params.max_tokens:
                    # Out of length: the live beams compete with the finished hypotheses.
                    finished.extend(
                        self._hypothesis(b.request.token_ids, len(prompt_token_ids), b.cum_logprob, params, "length")
                        for b in beams
                    )
                    break
                logprobs = self._decode(beams, params.temperature)
                if observe:
                    tables = self.kv_cache_manager.block_tables
                    observe(self.kv_cache_manager.num_used_blocks, sum(len(tables[b.request.request_id]) for b in beams))
        finally:
            for beam in beams:
                self.kv_cache_manager.free(beam.request)
        best = sorted(finished, key=lambda h: h.score, reverse=True)[: params.beam_width]
        return BeamSearchOutput([
            BeamSearchSequence(
                tokens=h.tokens,
                text=self.tokenizer.decode(h.tokens, skip_special_tokens=True),
                cum_logprob=h.cum_logprob,
                score=h.score,
                finish_reason=h.finish_reason,
            )
            for h in best
        ])

    def _prefill(self, root: Request, temperature: float) -> torch.Tensor:
        """Compute the prompt in chunks under the token budget; returns the first logprobs ``[1, vocab]``."""
        while True:
            num_new_tokens = min(root.num_tokens - root.num_computed_tokens, self.max_num_batched_tokens)
            output = self._schedule([root], num_new_tokens)
            if root.num_computed_tokens + num_new_tokens == root.num_tokens:
                logprobs = self.runner.next_token_logprobs(output, temperature)
                root.num_computed_tokens += num_new_tokens
                return logprobs
            self.runner.execute(output)
            root.num_computed_tokens += num_new_tokens

    def _decode(self, beams: list[_Beam], temperature: float) -> torch.Tensor:
        requests = [beam.request for beam in beams]
        logprobs = self.runner.next_token_logprobs(self._schedule(requests, 1), temperature)
        for request in requests:
            request.num_computed_tokens += 1
        return logprobs

    def _schedule(self, requests: list[Request], num_new_tokens: int) -> SchedulerOutput:
        manager = self.kv_cache_manager
        for request in requests:
            if not manager.allocate_slots(request, num_new_tokens):
                raise ConfigError(
                    f"the KV cache ({manager.num_blocks} blocks) cannot hold {len(requests)} beams of "
                    f"{request.num_tokens} tokens; raise kv_cache_memory or lower beam_width / max_tokens"
                )
        scheduled = [ScheduledRequest(r, num_new_tokens, manager.block_tables[r.request_id]) for r in requests]
        return SchedulerOutput(scheduled=scheduled, block_copies=manager.take_pending_copies())

    def _select(self, beams, logprobs, params, finished, prompt_length) -> list[tuple[int, int, float]]:
        """The next beams as (parent index, token, cumulative logprob); finished EOS hypotheses go to ``finished``."""
        vocab_size = logprobs.shape[-1]
        if beams[0].request.constraint is not None:  # beams descend from one root: all or none are constrained
            packed = torch.stack([beam.request.constraint.allowed_token_bitmask() for beam in beams])
            logprobs = logprobs.masked_fill(~unpack_token_bitmask(packed.to(logprobs.device), vocab_size), float("-inf"))
        scores = logprobs + torch.tensor([beam.cum_logprob for beam in beams], device=logprobs.device).unsqueeze(-1)
        top_scores, top_indices = scores.flatten().topk(min(2 * params.beam_width, scores.numel()))
        candidates = []
        for rank, (score, flat_index) in enumerate(zip(top_scores.tolist(), top_indices.tolist())):
            if score == float("-inf"):
                break  # the constraints allow fewer tokens than candidates wanted
            parent, token = divmod(flat_index, vocab_size)
            if token in self.eos_token_ids and not params.ignore_eos:
                if rank < params.beam_width:
                    tokens = [*beams[parent].request.token_ids, token]
                    finished.append(self._hypothesis(tokens, prompt_length, score, params, "stop"))
                continue
            candidates.append((parent, token, score))
            if len(candidates) == params.beam_width:
                break
        return candidates

    @staticmethod
    def _hypothesis(tokens, prompt_length: int, cum_logprob: float, params: BeamSearchParams, reason: str) -> _Hypothesis:
        num_generated = len(tokens) - prompt_length
        return _Hypothesis(list(tokens), cum_logprob, cum_logprob / num_generated**params.length_penalty, reason)

    @staticmethod
    def _done(finished, candidates, params, num_generated: int) -> bool:
        """No live beam can beat the worst of ``beam_width`` finished hypotheses any more."""
        if not candidates:
            return True
        if len(finished) < params.beam_width:
            return False
        worst_kept = sorted(h.score for h in finished)[-params.beam_width]
        best_live = max(score for _, _, score in candidates) / num_generated**params.length_penalty
        return worst_kept >= best_live

    def _advance(self, beams: list[_Beam], candidates: list[tuple[int, int, float]]) -> list[_Beam]:
        """Reuse each chosen parent once, fork it for further children, free unchosen beams."""
        manager = self.kv_cache_manager
        reused: set[int] = set()
        assigned: list[Request] = []
        for parent, _, _ in candidates:
            parent_request = beams[parent].request
            if parent in reused:
                child = parent_request.fork(0, request_id=f"beam-{next(self._ids)}")
                manager.fork(parent_request, child)
                assigned.append(child)
            else:
                reused.add(parent)
                assigned.append(parent_request)
        for index, beam in enumerate(beams):
            if index not in reused:
                manager.free(beam.request)
        for request, (_, token, _) in zip(assigned, candidates):
            request.token_ids.append(token)
            if request.constraint is not None:
                request.constraint.accept_token(token)
        return [_Beam(request, score) for request, (_, _, score) in zip(assigned, candidates)]

    def _retire_completed(self, beams: list[_Beam], finished: list[_Hypothesis], params, prompt_length: int) -> list[_Beam]:
        """Beams whose constraint can only end become finished hypotheses; the others stay live."""
        live = []
        for beam in beams:
            if beam.request.constraint is not None and beam.request.constraint.is_complete():
                finished.append(self._hypothesis(beam.request.token_ids, prompt_length, beam.cum_logprob, params, "stop"))
                self.kv_cache_manager.free(beam.request)
            else:
                live.append(beam)
        return live

"""Beam search as ordinary scheduled sequences: a group of beams forks and prunes them every step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pagedllm_core.engine.sequence import Sequence
from pagedllm_core.sampling_params import BeamSearchParams


def beam_score(cum_logprob: float, num_generated: int, length_penalty: float) -> float:
    """How finished beams are ranked, as Hugging Face's ``generate(num_beams=...)`` ranks them."""
    return cum_logprob / num_generated**length_penalty


@dataclass
class Hypothesis:
    """A finished beam: its generated tokens, cumulative logprob, score and why it ended."""

    token_ids: list[int]
    cum_logprob: float
    score: float
    finish_reason: str


@dataclass
class BeamStep:
    """What one round of selection changed: beams to fork (parent, child) and beams to drop."""

    forks: list[tuple[Sequence, Sequence]] = field(default_factory=list)
    pruned: list[Sequence] = field(default_factory=list)
    done: bool = False


class BeamSearchGroup:
    """The beams of one beam-search request.

    Each live beam is a running sequence that samples nothing: when a step computes its last token,
    the worker scores its ``num_candidates`` best next tokens. Once every live beam has candidates
    (the scheduler skips a beam that waits for its siblings), :meth:`advance` selects as Hugging
    Face's beam search does: the ``2 * beam_width`` best (beam, token) pairs by cumulative logprob;
    an EOS among the first ``beam_width`` finishes a hypothesis, the rest become the next beams.
    A chosen parent is reused once and forked for further children (sharing its KV blocks); the
    beams nobody chose are pruned. With a constraint, candidates come from each beam's allowed
    tokens and a beam whose output can only end becomes a finished hypothesis.
    """

    def __init__(
        self,
        request_id: str,
        root: Sequence,
        params: BeamSearchParams,
        eos_token_ids: frozenset[int],
        new_seq_id: Callable[[], str],
    ):
        self.request_id = request_id
        self.params = params
        self.eos_token_ids = eos_token_ids
        self.new_seq_id = new_seq_id
        self.prompt_token_ids = root.prompt_token_ids
        root.beam_group = self
        self.beams: dict[str, tuple[Sequence, float]] = {root.seq_id: (root, 0.0)}
        self.finished: list[Hypothesis] = []
        self.num_steps = 0
        self._candidates: dict[str, list[tuple[int, float]]] = {}

    @property
    def num_candidates(self) -> int:
        return 2 * self.params.beam_width

    @property
    def live_sequences(self) -> list[Sequence]:
        return [sequence for sequence, _ in self.beams.values()]

    def add_candidates(self, seq_id: str, candidates: list[tuple[int, float]]) -> bool:
        """Take a beam's scored next tokens; True once every live beam has its own."""
        self._candidates[seq_id] = candidates
        return len(self._candidates) == len(self.beams)

    def advance(self) -> BeamStep:
        """Select the next beams from every beam's candidates and append their tokens."""
        self.num_steps += 1
        chosen = self._select()
        step = BeamStep()
        if self._done(chosen):
            step.done = True
            return step
        reused: set[str] = set()
        next_beams: list[tuple[Sequence, int, float]] = []
        for seq_id, token, score in chosen:
            parent = self.beams[seq_id][0]
            if seq_id in reused:
                child = parent.fork(self.new_seq_id())
                step.forks.append((parent, child))
                next_beams.append((child, token, score))
            else:
                reused.add(seq_id)
                next_beams.append((parent, token, score))
        step.pruned = [sequence for seq_id, (sequence, _) in self.beams.items() if seq_id not in reused]
        self.beams = {}
        for sequence, token, score in next_beams:
            if sequence.append_token(token):
                self.beams[sequence.seq_id] = (sequence, score)
            else:  # its constraint can only end here
                self._finish(sequence.output_token_ids, score, "stop")
                step.pruned.append(sequence)
        self._candidates = {}
        if not self.beams:
            step.done = True
        elif self.num_steps == self.params.max_tokens:
            # Out of length: the live beams compete with the finished hypotheses.
            for sequence, score in self.beams.values():
                self._finish(sequence.output_token_ids, score, "length")
            step.done = True
        return step

    def _select(self) -> list[tuple[str, int, float]]:
        """The next beams as (parent seq id, token, cumulative logprob); EOS hypotheses go to ``finished``."""
        scored = sorted(
            (
                (cum_logprob + logprob, seq_id, token)
                for seq_id, (_, cum_logprob) in self.beams.items()
                for token, logprob in self._candidates[seq_id]
            ),
            key=lambda candidate: candidate[0],
            reverse=True,
        )[: self.num_candidates]
        width = self.params.beam_width
        chosen = []
        for rank, (score, seq_id, token) in enumerate(scored):
            if score == float("-inf"):
                break  # the constraints allow fewer tokens than candidates wanted
            if token in self.eos_token_ids and not self.params.ignore_eos:
                if rank < width:
                    self._finish([*self.beams[seq_id][0].output_token_ids, token], score, "stop")
                continue
            chosen.append((seq_id, token, score))
            if len(chosen) == width:
                break
        return chosen

    def _finish(self, token_ids: list[int], cum_logprob: float, reason: str) -> None:
        score = beam_score(cum_logprob, len(token_ids), self.params.length_penalty)
        self.finished.append(Hypothesis(list(token_ids), cum_logprob, score, reason))

    def _done(self, chosen: list[tuple[str, int, float]]) -> bool:
        """No live beam can beat the worst of ``beam_width`` finished hypotheses any more."""
        if not chosen:
            return True
        width = self.params.beam_width
        if len(self.finished) < width:
            return False
        worst_kept = sorted(h.score for h in self.finished)[-width]
        best_live = beam_score(max(score for _, _, score in chosen), self.num_steps, self.params.length_penalty)
        return worst_kept >= best_live

    def best_hypotheses(self, aborted: bool = False) -> list[Hypothesis]:
        """The best ``beam_width`` hypotheses, best first (an aborted group ranks its live beams too)."""
        hypotheses = list(self.finished)
        if aborted:
            for sequence, cum_logprob in self.beams.values():
                num_generated = max(sequence.num_output_tokens, 1)
                score = beam_score(cum_logprob, num_generated, self.params.length_penalty)
                hypotheses.append(Hypothesis(sequence.output_token_ids, cum_logprob, score, "abort"))
        return sorted(hypotheses, key=lambda h: h.score, reverse=True)[: self.params.beam_width]

"""Verifying draft tokens against the target model's distributions (Leviathan et al., 2023).

Greedy: the longest prefix of drafts equal to the target's argmax, then the target's argmax after it.
Sampling: draft ``j`` is accepted with probability ``min(1, p_j(d) / q_j(d))``; at the first rejection a
token is drawn from ``norm(max(0, p_j - q_j))`` instead, and when every draft is accepted a bonus token
is drawn from ``p_k``. Each emitted token is then distributed exactly as under ``p`` alone. A draft
proposed deterministically (prompt lookup, a greedy draft model) has ``q`` a point mass on it.
"""

from __future__ import annotations

import torch


def verify_greedy(target_token_ids: list[int], draft_token_ids: list[int]) -> list[int]:
    """The emitted tokens: accepted drafts plus the target's own token after them.

    ``target_token_ids`` are the target's argmax at the ``k + 1`` verified positions."""
    num_accepted = 0
    while num_accepted < len(draft_token_ids) and draft_token_ids[num_accepted] == target_token_ids[num_accepted]:
        num_accepted += 1
    return [*draft_token_ids[:num_accepted], target_token_ids[num_accepted]]


def rejection_sample(
    target_probs: torch.Tensor,
    draft_token_ids: list[int],
    draft_probs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The emitted tokens for one sequence: its accepted drafts plus one token drawn by the rule above.

    ``target_probs``: ``[k + 1, vocab]`` the target's sampling distributions at the ``k`` draft
    positions and after the last one; ``draft_probs``: ``[k, vocab]`` the distributions the drafts
    were drawn from, None for drafts proposed deterministically. Always draws ``k`` uniforms and one
    categorical sample, so a seeded generator gives reproducible results."""
    num_drafts = len(draft_token_ids)
    device = target_probs.device
    drafts = torch.tensor(draft_token_ids, dtype=torch.int64, device=device)
    positions = torch.arange(num_drafts, device=device)
    target_of_draft = target_probs[positions, drafts]
    draft_of_draft = torch.ones_like(target_of_draft) if draft_probs is None else draft_probs[positions, drafts]
    uniforms = torch.rand(num_drafts, generator=generator, device=device, dtype=target_probs.dtype)
    # u < p / q, written without the division (q > 0 for a token drawn from q).
    accepted = (uniforms * draft_of_draft < target_of_draft).tolist()
    num_accepted = accepted.index(False) if False in accepted else num_drafts
    distribution = target_probs[num_accepted]
    if num_accepted < num_drafts:
        if draft_probs is None:
            subtracted = torch.zeros_like(distribution)
            subtracted[draft_token_ids[num_accepted]] = 1.0
        else:
            subtracted = draft_probs[num_accepted]
        residual = (distribution - subtracted).clamp_(min=0)
        # A rejection means p(d) < q(d), so the residual has mass; rounding aside.
        if residual.sum() > 0:
            distribution = residual
    token = torch.multinomial(distribution, 1, generator=generator).item()
    return [*draft_token_ids[:num_accepted], token]

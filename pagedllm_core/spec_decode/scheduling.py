"""What the scheduler needs to know about speculation: drafts to verify, lookahead slots, rollback."""

from __future__ import annotations

from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.sequence import Sequence
from pagedllm_core.spec_decode.config import SpeculativeConfig


def drafts_to_verify(sequence: Sequence, num_new_tokens: int, token_budget: int) -> list[int]:
    """The proposed drafts this step verifies after the sequence's last token: only when it decodes
    that one token, as many as the token budget and its output-token limit leave room for."""
    if num_new_tokens != 1 or not sequence.spec_token_ids:
        return []
    room = min(token_budget - 1, sequence.max_output_tokens - sequence.num_output_tokens - 1)
    return sequence.spec_token_ids[: max(room, 0)]


def num_lookahead_slots(config: SpeculativeConfig | None, sequence: Sequence, num_covered_tokens: int) -> int:
    """Slots a draft model writes past the step's ``num_covered_tokens`` while it proposes (the first
    new token, then all but the last draft), within the sequence's room; 0 for prompt lookup."""
    if config is None or not config.uses_draft_model:
        return 0
    room = sequence.num_prompt_tokens + sequence.max_output_tokens - num_covered_tokens
    return max(min(config.num_speculative_tokens, room), 0)


def advance_verified(sequence: Sequence, num_drafts: int, token_ids: list[int]) -> None:
    """Roll a verified step forward: keep the KV of the accepted drafts only, then append the run
    (accepted drafts and the target's token) until the sequence finishes inside it. No tokens (the
    sequence failed this step): every draft is dropped."""
    sequence.num_computed_tokens -= num_drafts - max(len(token_ids) - 1, 0)
    for token_id in token_ids:
        sequence.append_output_token(token_id)
        if sequence.is_finished:
            break
    sequence.num_computed_tokens = min(sequence.num_computed_tokens, sequence.num_tokens)


def free_uncomputed_blocks(kv_cache_manager: KVCacheManager, sequence: Sequence) -> None:
    """Release the blocks past the sequence's computed tokens: rejected drafts' and lookahead slots.

    Prefix-cache names only ever cover computed tokens, so no rejected token is hashed."""
    kv_cache_manager.truncate(sequence, kv_cache_manager.blocks_for_tokens(sequence.num_computed_tokens))

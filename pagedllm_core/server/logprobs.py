"""Render the engine's per-position logprobs in the completions and chat response shapes."""

from __future__ import annotations

from pagedllm_core.outputs import Logprob, PositionLogprobs
from pagedllm_core.server.responses import ChatLogprobs, CompletionLogprobs, TokenLogprob, TopLogprob


class TokenLabeler:
    """How a token is named in logprobs: its text, or ``token_id:<id>`` (vLLM's ``return_tokens_as_token_ids``,
    for clients that need tokens that do not decode to text on their own)."""

    def __init__(self, tokenizer, as_token_ids: bool = False):
        self.tokenizer = tokenizer
        self.as_token_ids = as_token_ids

    def text(self, token_id: int, logprob: Logprob) -> str:
        if logprob.decoded_token is not None:
            return logprob.decoded_token
        return self.tokenizer.decode([token_id])

    def label(self, token_id: int, logprob: Logprob) -> str:
        return f"token_id:{token_id}" if self.as_token_ids else self.text(token_id, logprob)


def _top(position: PositionLogprobs, num_top: int) -> list[tuple[int, Logprob]]:
    """The ``num_top`` most likely entries of a position (it also holds the sampled token)."""
    return sorted(position.items(), key=lambda item: -item[1].logprob)[:num_top]


def completion_logprobs(
    labeler: TokenLabeler, token_ids: list[int], positions: list[PositionLogprobs], num_top: int, text_offset: int
) -> CompletionLogprobs:
    """Legacy completions logprobs for these tokens; offsets count from ``text_offset`` in the text."""
    result = CompletionLogprobs()
    for token_id, position in zip(token_ids, positions):
        result.tokens.append(labeler.label(token_id, position[token_id]))
        result.token_logprobs.append(position[token_id].logprob)
        result.top_logprobs.append({labeler.label(top_id, top): top.logprob for top_id, top in _top(position, num_top)})
        result.text_offset.append(text_offset)
        text_offset += len(labeler.text(token_id, position[token_id]))
    return result


def chat_logprobs(
    labeler: TokenLabeler, token_ids: list[int], positions: list[PositionLogprobs], num_top: int
) -> ChatLogprobs:
    """Chat logprobs for these tokens, each with its ``num_top`` most likely alternatives."""
    content = []
    for token_id, position in zip(token_ids, positions):
        token = labeler.label(token_id, position[token_id])
        top = [
            TopLogprob(token=text, logprob=entry.logprob, bytes=list(text.encode()))
            for text, entry in ((labeler.label(i, e), e) for i, e in _top(position, num_top))
        ]
        content.append(
            TokenLogprob(token=token, logprob=position[token_id].logprob, bytes=list(token.encode()), top_logprobs=top)
        )
    return ChatLogprobs(content=content)

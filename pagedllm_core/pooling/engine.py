"""The embedding engine: prompts in, embeddings out, in batches under the token budget; no scheduler."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ConfigError
from pagedllm_core.pooling.config import PoolingConfig
from pagedllm_core.pooling.loading import load_embedding_model
from pagedllm_core.pooling.params import PoolingParams
from pagedllm_core.pooling.pooler import finish_embedding
from pagedllm_core.pooling.runner import EmbeddingRunner


class PromptTooLongError(ConfigError):
    """A prompt has more tokens than the model's context (vLLM's wording, which clients look for)."""

    def __init__(self, num_tokens: int, max_model_len: int):
        super().__init__(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{num_tokens} tokens in the input for embedding generation. Please reduce the length of the input."
        )


class EmbeddingEngine:
    """Embeds prompts with an encoder, or a decoder plus a pooler.

    Whole prompts run in one forward each, without a KV cache, so there is nothing to schedule:
    prompts are sorted by length (less padding) and cut into batches of at most ``max_num_seqs``
    prompts and ``max_num_batched_tokens`` padded tokens.
    """

    def __init__(self, config: EngineConfig, pooling: PoolingConfig):
        self.config = config
        self.loaded = load_embedding_model(config, pooling)
        self.runner = EmbeddingRunner(self.loaded)
        self.tokenizer = self.loaded.tokenizer
        self.max_model_len = self.loaded.max_model_len

    @property
    def embedding_size(self) -> int:
        return self.loaded.hidden_size

    def tokenize(self, prompt: str | list[int], truncate_prompt_tokens: int | None = None) -> list[int]:
        """A prompt's token ids, keeping the last ``truncate_prompt_tokens`` when given; a ConfigError
        for an empty prompt, token ids outside the vocabulary, or a prompt over ``max_model_len``."""
        if not prompt:
            raise ConfigError("a prompt to embed must not be empty")
        token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not token_ids:
            raise ConfigError("a prompt to embed must not be empty")
        vocab_size = len(self.tokenizer)
        bad = [token for token in token_ids if not 0 <= token < vocab_size]
        if bad:
            raise ConfigError(f"token ids must be in [0, {vocab_size}); got {bad[:5]}")
        if truncate_prompt_tokens is not None:
            if not 1 <= truncate_prompt_tokens <= self.max_model_len:
                raise ConfigError(
                    f"truncate_prompt_tokens must be in [1, {self.max_model_len}], got {truncate_prompt_tokens}"
                )
            token_ids = token_ids[-truncate_prompt_tokens:]
        if len(token_ids) > self.max_model_len:
            raise PromptTooLongError(len(token_ids), self.max_model_len)
        return token_ids

    def check_params(self, params: PoolingParams) -> None:
        """A ConfigError when ``params.dimensions`` is a size this model cannot be cut to."""
        dimensions = params.dimensions
        if dimensions is None or dimensions == self.embedding_size:
            return
        allowed = self.loaded.matryoshka_dimensions
        if allowed is None:
            raise ConfigError(
                f"dimensions={dimensions}: this model is not a Matryoshka model, so its embeddings cannot be "
                f"shortened; leave dimensions out or pass {self.embedding_size}"
            )
        if dimensions not in allowed:
            shown = f"1 to {self.embedding_size}" if len(allowed) == self.embedding_size else str(allowed)
            raise ConfigError(f"dimensions={dimensions} is not supported; this model allows {shown}")

    def embed(
        self,
        prompts: Sequence[list[int]],
        params: Sequence[PoolingParams],
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[float]]:
        """Embeddings of tokenized prompts (see :meth:`tokenize`), in input order; ``on_batch`` gets
        the number of prompts after each batch."""
        for prompt_params in set(params):
            self.check_params(prompt_params)
        embeddings: list[list[float] | None] = [None] * len(prompts)
        for batch in self._batches(prompts):
            pooled = self.runner.run([prompts[index] for index in batch])
            for row, index in enumerate(batch):
                normalize = params[index].normalize
                embeddings[index] = finish_embedding(
                    pooled[row],
                    params[index].dimensions,
                    self.loaded.pooler.normalize if normalize is None else normalize,
                )
            if on_batch is not None:
                on_batch(len(batch))
        return embeddings

    def _batches(self, prompts: Sequence[list[int]]) -> list[list[int]]:
        """Prompt indices, shortest first, in batches whose padded size fits the token budget."""
        budget = max(self.config.max_num_batched_tokens, self.max_model_len)  # a longest prompt always fits
        batches: list[list[int]] = []
        for index in sorted(range(len(prompts)), key=lambda index: len(prompts[index])):
            batch = batches[-1] if batches else None
            # sorted ascending, so this prompt sets the batch's padded length
            if batch is None or len(batch) >= self.config.max_num_seqs or (len(batch) + 1) * len(prompts[index]) > budget:
                batches.append([index])
            else:
                batch.append(index)
        return batches

"""What the model runner expects of every model implementation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch

from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.model.checkpoint import CheckpointTensor


class CausalLM(Protocol):
    """A decoder-only model that runs a flattened batch of tokens over the paged KV cache.

    Implementations are ``torch.nn.Module``s constructed as ``Model(hf_config, attention, linear)`` where
    ``attention`` is the engine's backend instance and ``linear`` the
    :class:`~pagedllm_core.model.layers.linear.LinearFactory` that builds their projections (quantized,
    or this rank's shard under tensor parallelism); every attention layer calls
    ``attention.forward(q, k, v, kv_caches[layer_index], metadata)``.
    """

    merged_projections: dict[str, tuple[str, int]]
    """Checkpoint projection name -> (name of the merged layer holding it, its index there), e.g.
    ``{"q_proj": ("qkv_proj", 0)}``."""

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        """``input_ids``/``positions``: ``[num_tokens]`` -> hidden states ``[num_tokens, hidden_size]``."""
        ...

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[num_rows, hidden_size]`` -> float32 logits ``[num_rows, vocab_size]``."""
        ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor | CheckpointTensor]]) -> None:
        """Take checkpoint tensors (or entries not read yet) by their Hugging Face names, fusing projections as
        needed (:func:`~pagedllm_core.model.weight_loading.load_named_tensors`)."""
        ...



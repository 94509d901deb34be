"""BERT as a sentence encoder (all-MiniLM, BGE, E5, ...): bidirectional attention, post-norm blocks.

It runs the flattened batch of :class:`~pagedllm_core.model.interface.CausalLM` models and returns
the final hidden states; the pooler turns them into embeddings. It has no language-model head.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.attention_shape import attention_shape
from pagedllm_core.model.checkpoint import CheckpointTensor
from pagedllm_core.model.layers.activation import activation_function
from pagedllm_core.model.layers.attention import PagedAttention
from pagedllm_core.model.layers.linear import LinearFactory
from pagedllm_core.model.weight_loading import load_named_tensors

MERGED_PROJECTIONS = {"query": ("qkv_proj", 0), "key": ("qkv_proj", 1), "value": ("qkv_proj", 2)}

# Hugging Face name pieces -> ours, applied in order (the attention output before the MLP output).
CHECKPOINT_RENAMES = (
    ("encoder.layer.", "layers."),
    ("attention.self.", "attention."),
    ("attention.output.dense.", "attention.out_proj."),
    ("attention.output.LayerNorm.", "attention_norm."),
    ("intermediate.dense.", "intermediate."),
    ("output.dense.", "output."),
    ("output.LayerNorm.", "output_norm."),
)


class BertEmbeddings(nn.Module):
    """Token + absolute position + token type (always type 0: one segment per input), then LayerNorm."""

    def __init__(self, hf_config):
        super().__init__()
        hidden_size = hf_config.hidden_size
        self.word_embeddings = nn.Embedding(hf_config.vocab_size, hidden_size)
        self.position_embeddings = nn.Embedding(hf_config.max_position_embeddings, hidden_size)
        self.token_type_embeddings = nn.Embedding(hf_config.type_vocab_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=hf_config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # input_ids, positions: [num_tokens] -> [num_tokens, hidden_size]
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.LayerNorm(embeddings + self.token_type_embeddings.weight[0])


class BertAttention(nn.Module):
    """Fused q/k/v projection, attention within each sequence (both directions), output projection."""

    def __init__(self, hf_config, backend: AttentionBackend, layer_index: int, linear: LinearFactory, prefix: str):
        super().__init__()
        shape = attention_shape(hf_config)
        hidden_size = hf_config.hidden_size
        self.qkv_proj = linear(f"{prefix}.qkv_proj", hidden_size, [hidden_size] * 3, True)
        self.attn = PagedAttention(backend, layer_index, shape.num_heads, shape.num_heads, shape.head_size)
        self.out_proj = linear(f"{prefix}.out_proj", hidden_size, hidden_size, True)

    def forward(self, hidden_states, kv_caches, metadata):
        # hidden_states: [num_tokens, hidden_size] -> q, k, v: [num_tokens, hidden_size]
        query, key, value = self.qkv_proj.split(self.qkv_proj(hidden_states))
        return self.out_proj(self.attn(query, key, value, kv_caches, metadata))


class BertLayer(nn.Module):
    """Post-norm residual block: ``norm(x + attention(x))``, then ``norm(x + mlp(x))``."""

    def __init__(self, hf_config, backend: AttentionBackend, layer_index: int, linear: LinearFactory, prefix: str):
        super().__init__()
        hidden_size, eps = hf_config.hidden_size, hf_config.layer_norm_eps
        self.attention = BertAttention(hf_config, backend, layer_index, linear, f"{prefix}.attention")
        self.attention_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.intermediate = linear(f"{prefix}.intermediate", hidden_size, hf_config.intermediate_size, True)
        self.act = activation_function(hf_config.hidden_act)
        self.output = linear(f"{prefix}.output", hf_config.intermediate_size, hidden_size, True)
        self.output_norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, hidden_states, kv_caches, metadata):
        hidden_states = self.attention_norm(hidden_states + self.attention(hidden_states, kv_caches, metadata))
        # [num_tokens, hidden_size] -> [num_tokens, intermediate_size] -> [num_tokens, hidden_size]
        return self.output_norm(hidden_states + self.output(self.act(self.intermediate(hidden_states))))


class BertModel(nn.Module):
    """The encoder; ``forward`` returns the last layer's hidden states (``[num_tokens, hidden_size]``)."""

    merged_projections = MERGED_PROJECTIONS

    def __init__(self, hf_config, attention: AttentionBackend, linear: LinearFactory | None = None):
        super().__init__()
        linear = linear or LinearFactory()
        if getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
            raise ModelLoadError(
                f"BERT position_embedding_type {hf_config.position_embedding_type!r} is not supported; only absolute"
            )
        self.embeddings = BertEmbeddings(hf_config)
        self.layers = nn.ModuleList(
            BertLayer(hf_config, attention, index, linear, f"layers.{index}") for index in range(hf_config.num_hidden_layers)
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor | None],
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        hidden_states = self.embeddings(input_ids, positions)
        for layer in self.layers:
            hidden_states = layer(hidden_states, kv_caches, metadata)
        return hidden_states

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor | CheckpointTensor]]) -> None:
        load_named_tensors(self, _renamed(weights), self.merged_projections)


def _renamed(weights: Iterable[tuple[str, torch.Tensor | CheckpointTensor]]) -> Iterator[tuple[str, torch.Tensor | CheckpointTensor]]:
    for name, tensor in weights:
        name = name.removeprefix("bert.")  # BertForMaskedLM and other task checkpoints nest the encoder
        for old, new in CHECKPOINT_RENAMES:
            name = name.replace(old, new)
        yield name, tensor

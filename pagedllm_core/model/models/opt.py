"""Meta's OPT: learned positions, LayerNorm, ReLU MLP, biases everywhere, tied output embedding."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.model.attention_shape import attention_shape
from pagedllm_core.model.checkpoint import CheckpointTensor
from pagedllm_core.model.layers.activation import activation_function
from pagedllm_core.model.layers.attention import PagedAttention
from pagedllm_core.model.layers.linear import LinearFactory
from pagedllm_core.model.weight_loading import load_named_tensors

MERGED_PROJECTIONS = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2)}

# OPT reserves the first two rows of its position table (a fairseq padding convention).
POSITION_OFFSET = 2


class OPTAttention(nn.Module):
    """Fused q/k/v projection, paged attention, output projection; positions come from the embedding."""

    def __init__(self, hf_config, backend: AttentionBackend, layer_index: int, linear: LinearFactory, prefix: str):
        super().__init__()
        shape = attention_shape(hf_config)
        hidden = hf_config.hidden_size
        heads = linear.tp.attention_heads(shape.num_heads, shape.num_kv_heads)
        query = heads.query.scaled(shape.head_size)
        self.qkv_proj = linear.column(f"{prefix}.qkv_proj", hidden, [query] * 3, hf_config.enable_bias)
        self.out_proj = linear.row(f"{prefix}.out_proj", hidden, hidden, hf_config.enable_bias, query)
        self.attn = PagedAttention(backend, layer_index, heads.query.size, heads.key_value.size, shape.head_size)
        self.tp = linear.tp

    def forward(self, hidden_states, kv_caches, metadata):
        # hidden_states: [num_tokens, hidden_size]
        query, key, value = self.qkv_proj.split(self.qkv_proj(hidden_states))
        return self.tp.all_reduce(self.out_proj(self.attn(query, key, value, kv_caches, metadata)))


class OPTDecoderLayer(nn.Module):
    """Attention and ReLU MLP blocks, normalised before (most sizes) or after (350m) each residual add."""

    def __init__(self, hf_config, backend: AttentionBackend, layer_index: int, linear: LinearFactory, prefix: str):
        super().__init__()
        hidden = hf_config.hidden_size
        affine = hf_config.layer_norm_elementwise_affine
        self.do_layer_norm_before = hf_config.do_layer_norm_before
        self.self_attn = OPTAttention(hf_config, backend, layer_index, linear, f"{prefix}.self_attn")
        self.self_attn_layer_norm = nn.LayerNorm(hidden, elementwise_affine=affine)
        self.fc1 = linear.column(f"{prefix}.fc1", hidden, linear.tp.shard(hf_config.ffn_dim), hf_config.enable_bias)
        self.fc2 = linear.row(f"{prefix}.fc2", hf_config.ffn_dim, hidden, hf_config.enable_bias)
        self.tp = linear.tp
        self.act = activation_function(hf_config.activation_function)
        self.final_layer_norm = nn.LayerNorm(hidden, elementwise_affine=affine)

    def forward(self, hidden_states, kv_caches, metadata):
        hidden_states = self._residual(
            hidden_states, self.self_attn_layer_norm, lambda x: self.self_attn(x, kv_caches, metadata)
        )
        return self._residual(
            hidden_states, self.final_layer_norm, lambda x: self.tp.all_reduce(self.fc2(self.act(self.fc1(x))))
        )

    def _residual(self, hidden_states, norm, block):
        if self.do_layer_norm_before:
            return hidden_states + block(norm(hidden_states))
        return norm(hidden_states + block(hidden_states))


class OPTDecoder(nn.Module):
    """Token and position embeddings, decoder layers, optional final norm (``model.decoder`` in checkpoints)."""

    def __init__(self, hf_config, backend: AttentionBackend, linear: LinearFactory):
        super().__init__()
        hidden = hf_config.hidden_size
        embed_dim = hf_config.word_embed_proj_dim
        self.embed_tokens = linear.vocab_embedding(hf_config.vocab_size, embed_dim)
        self.embed_positions = nn.Embedding(hf_config.max_position_embeddings + POSITION_OFFSET, hidden)
        # opt-350m embeds words in a smaller space than the decoder runs in.
        projects = embed_dim != hidden
        self.project_in = linear("model.decoder.project_in", embed_dim, hidden, False) if projects else None
        self.project_out = linear("model.decoder.project_out", hidden, embed_dim, False) if projects else None
        self.layers = nn.ModuleList(
            OPTDecoderLayer(hf_config, backend, index, linear, f"model.decoder.layers.{index}")
            for index in range(hf_config.num_hidden_layers)
        )
        has_final_norm = hf_config.do_layer_norm_before and not getattr(hf_config, "_remove_final_layer_norm", False)
        self.final_layer_norm = (
            nn.LayerNorm(hidden, elementwise_affine=hf_config.layer_norm_elementwise_affine) if has_final_norm else None
        )

    def forward(self, input_ids, positions, kv_caches, metadata):
        # input_ids, positions: [num_tokens] -> hidden_states: [num_tokens, hidden_size]
        embeddings = self.embed_tokens(input_ids)
        if self.project_in is not None:
            embeddings = self.project_in(embeddings)
        hidden_states = embeddings + self.embed_positions(positions + POSITION_OFFSET)
        for layer in self.layers:
            hidden_states = layer(hidden_states, kv_caches, metadata)
        if self.final_layer_norm is not None:
            hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states


class OPTModel(nn.Module):
    """Holds the decoder under the name checkpoints use (``model.decoder.*``)."""

    def __init__(self, hf_config, backend: AttentionBackend, linear: LinearFactory):
        super().__init__()
        self.decoder = OPTDecoder(hf_config, backend, linear)


class OPTForCausalLM(nn.Module):
    """OPT (125m to 66b): a :class:`~pagedllm_core.model.interface.CausalLM`."""

    merged_projections = MERGED_PROJECTIONS

    def __init__(self, hf_config, attention: AttentionBackend, linear: LinearFactory | None = None):
        super().__init__()
        linear = linear or LinearFactory()
        self.model = OPTModel(hf_config, attention, linear)
        self.vocab_size = hf_config.vocab_size
        self.lm_head = linear.column("lm_head", hf_config.word_embed_proj_dim, linear.tp.shard(self.vocab_size), False)
        if hf_config.tie_word_embeddings and isinstance(self.lm_head, nn.Linear):
            self.lm_head.weight = self.model.decoder.embed_tokens.weight
        self.tp = linear.tp

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        return self.model.decoder(input_ids, positions, kv_caches, metadata)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [num_rows, hidden_size] -> [num_rows, vocab_size]; project_out is per row, so it
        # can run here, on the few rows that need logits, instead of on every token.
        if self.model.decoder.project_out is not None:
            hidden_states = self.model.decoder.project_out(hidden_states)
        return self.tp.all_gather(self.lm_head(hidden_states), self.vocab_size).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor | CheckpointTensor]]) -> None:
        # The original facebook/opt-* checkpoints name the decoder without the "model." prefix.
        renamed = ((f"model.{name}" if name.startswith("decoder.") else name, tensor) for name, tensor in weights)
        load_named_tensors(self, renamed, self.merged_projections)

"""Llama and Mistral; Qwen2 reuses these blocks with different biases (see ``qwen2.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.model.attention_shape import attention_shape
from pagedllm_core.model.checkpoint import CheckpointTensor
from pagedllm_core.model.layers.activation import act_and_mul
from pagedllm_core.model.layers.attention import PagedAttention
from pagedllm_core.model.layers.linear import LinearFactory
from pagedllm_core.model.layers.norm import RMSNorm
from pagedllm_core.model.layers.rotary import RotaryEmbedding
from pagedllm_core.model.native_decode import NativeDecoder, NativeDecodeUnavailable, llama_decoder_program
from pagedllm_core.model.weight_loading import load_named_tensors

MERGED_PROJECTIONS = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


@dataclass(frozen=True)
class ProjectionBiases:
    """Which linear layers of a Llama-style decoder carry a bias: the one way the family differs."""

    qkv: bool
    output: bool
    mlp: bool


class LlamaAttention(nn.Module):
    """Fused q/k/v projection, rotary embedding, paged attention, output projection."""

    def __init__(
        self,
        hf_config,
        backend: AttentionBackend,
        layer_index: int,
        rotary: RotaryEmbedding,
        biases: ProjectionBiases,
        linear: LinearFactory,
        prefix: str,
    ):
        super().__init__()
        shape = attention_shape(hf_config)
        heads = linear.tp.attention_heads(shape.num_heads, shape.num_kv_heads)
        query = heads.query.scaled(shape.head_size)
        key_value = heads.key_value.scaled(shape.head_size)
        self.qkv_proj = linear.column(f"{prefix}.qkv_proj", hf_config.hidden_size, [query, key_value, key_value], biases.qkv)
        self.query_key_sizes = [query.size, key_value.size]
        self.o_proj = linear.row(
            f"{prefix}.o_proj", shape.num_heads * shape.head_size, hf_config.hidden_size, biases.output, query
        )
        self.rotary = rotary
        self.attn = PagedAttention(backend, layer_index, heads.query.size, heads.key_value.size, shape.head_size)
        self.tp = linear.tp

    def forward(self, position_embeddings, hidden_states, kv_caches, metadata):
        # hidden_states: [num_tokens, hidden_size] -> q: [num_tokens, q_size], k/v: [num_tokens, kv_size]
        qkv = self.qkv_proj(hidden_states)
        # q and k sit side by side in the fused output: one rotation covers both.
        query_key_size = sum(self.query_key_sizes)
        query, key = self.rotary.rotate_heads(qkv[:, :query_key_size], *position_embeddings).split(
            self.query_key_sizes, dim=-1
        )
        value = qkv[:, query_key_size:]
        return self.tp.all_reduce(self.o_proj(self.attn(query, key, value, kv_caches, metadata)))


class LlamaMLP(nn.Module):
    """Gated feed-forward: ``down(act(gate(x)) * up(x))`` with gate and up in one matmul."""

    def __init__(self, hf_config, bias: bool, linear: LinearFactory, prefix: str):
        super().__init__()
        intermediate = linear.tp.shard(hf_config.intermediate_size)
        self.gate_up_proj = linear.column(f"{prefix}.gate_up_proj", hf_config.hidden_size, [intermediate] * 2, bias)
        self.down_proj = linear.row(f"{prefix}.down_proj", hf_config.intermediate_size, hf_config.hidden_size, bias)
        self.act_fn = act_and_mul(hf_config.hidden_act)
        self.tp = linear.tp

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [num_tokens, hidden_size] -> gate_up: [num_tokens, 2 * intermediate_size]
        return self.tp.all_reduce(self.down_proj(self.act_fn(self.gate_up_proj(hidden_states))))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm residual block: attention, then the gated MLP.

    It takes and returns ``(hidden_states, residual)`` without the last residual add: the next
    norm (the next layer's input norm, or the model's final norm) folds it in. The first layer gets
    no residual: its input is the residual.
    """

    def __init__(
        self,
        hf_config,
        backend,
        layer_index: int,
        rotary: RotaryEmbedding,
        biases: ProjectionBiases,
        linear: LinearFactory,
        prefix: str,
    ):
        super().__init__()
        self.input_layernorm = RMSNorm(hf_config.hidden_size, hf_config.rms_norm_eps)
        self.self_attn = LlamaAttention(hf_config, backend, layer_index, rotary, biases, linear, f"{prefix}.self_attn")
        self.post_attention_layernorm = RMSNorm(hf_config.hidden_size, hf_config.rms_norm_eps)
        self.mlp = LlamaMLP(hf_config, biases.mlp, linear, f"{prefix}.mlp")

    def forward(self, position_embeddings, hidden_states, residual, kv_caches, metadata):
        # hidden_states, residual: [num_tokens, hidden_size]; residual is None in the first layer
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(position_embeddings, hidden_states, kv_caches, metadata)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


class LlamaModel(nn.Module):
    """Embedding, decoder layers and final norm; named ``model`` like in Hugging Face checkpoints."""

    def __init__(self, hf_config, backend: AttentionBackend, biases: ProjectionBiases, linear: LinearFactory):
        super().__init__()
        self.embed_tokens = linear.vocab_embedding(hf_config.vocab_size, hf_config.hidden_size)
        self.rotary = rotary = RotaryEmbedding.from_config(hf_config, attention_shape(hf_config).head_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(hf_config, backend, index, rotary, biases, linear, f"model.layers.{index}")
            for index in range(hf_config.num_hidden_layers)
        )
        self.norm = RMSNorm(hf_config.hidden_size, hf_config.rms_norm_eps)

    def forward(self, input_ids, positions, kv_caches, metadata):
        # input_ids, positions: [num_tokens] -> hidden_states: [num_tokens, hidden_size]
        hidden_states = self.embed_tokens(input_ids)
        position_embeddings = self.rotary.embed(positions, hidden_states.dtype)
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(position_embeddings, hidden_states, residual, kv_caches, metadata)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class LlamaForCausalLM(nn.Module):
    """Llama (1, 2, 3.x), SmolLM and Mistral: a :class:`~pagedllm_core.model.interface.CausalLM`."""

    merged_projections = MERGED_PROJECTIONS

    @classmethod
    def projection_biases(cls, hf_config) -> ProjectionBiases:
        attention_bias = getattr(hf_config, "attention_bias", False)
        return ProjectionBiases(qkv=attention_bias, output=attention_bias, mlp=getattr(hf_config, "mlp_bias", False))

    def __init__(self, hf_config, attention: AttentionBackend, linear: LinearFactory | None = None):
        super().__init__()
        linear = linear or LinearFactory()
        self.model = LlamaModel(hf_config, attention, self.projection_biases(hf_config), linear)
        self.vocab_size = hf_config.vocab_size
        self.lm_head = linear.column("lm_head", hf_config.hidden_size, linear.tp.shard(self.vocab_size), False)
        if hf_config.tie_word_embeddings and isinstance(self.lm_head, nn.Linear):
            self.lm_head.weight = self.model.embed_tokens.weight
        self.tp = linear.tp

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        return self.model(input_ids, positions, kv_caches, metadata)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [num_rows, hidden_size] -> [num_rows, vocab_size] (each rank computes its vocabulary shard)
        return self.tp.all_gather(self.lm_head(hidden_states), self.vocab_size).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor | CheckpointTensor]]) -> None:
        load_named_tensors(self, weights, self.merged_projections)

    def native_decoder(self, attention: AttentionBackend) -> NativeDecoder:
        """This model's decode steps in one C++ call (:mod:`pagedllm_core.model.native_decode`), built from its
        loaded weights; raises :class:`NativeDecodeUnavailable` naming what cannot run there."""
        if self.tp.world_size > 1:
            raise NativeDecodeUnavailable("tensor parallelism sums the layers' outputs over the ranks in Python")
        program = llama_decoder_program(self.model, attention)
        return NativeDecoder(self.model.embed_tokens, self.model.rotary, program, attention)


MistralForCausalLM = LlamaForCausalLM

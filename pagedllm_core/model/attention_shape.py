"""The attention geometry of a Hugging Face config, needed before the model or KV cache exist."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttentionShape:
    """Heads and head size of every attention layer, and how many layers there are."""

    num_heads: int
    num_kv_heads: int
    head_size: int
    scale: float
    num_layers: int


def attention_shape(hf_config) -> AttentionShape:
    """Read the attention geometry; ``head_dim`` wins over ``hidden_size // num_attention_heads``."""
    num_heads = hf_config.num_attention_heads
    head_size = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // num_heads
    return AttentionShape(
        num_heads=num_heads,
        num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or num_heads,
        head_size=head_size,
        scale=head_size**-0.5,
        num_layers=hf_config.num_hidden_layers,
    )

"""The shared building blocks against transformers' own implementations."""

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding, apply_rotary_pos_emb

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.layers.activation import activation_function
from pagedllm_core.model.layers.linear import MergedLinear
from pagedllm_core.model.layers.norm import RMSNorm
from pagedllm_core.model.layers.rotary import RotaryEmbedding, inverse_frequencies, rope_parameters

HEAD_SIZE = 16
LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
    "rope_theta": 500000.0,
}


def llama_config(rope: dict) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=64, num_attention_heads=4, head_dim=HEAD_SIZE, max_position_embeddings=256, rope_parameters=rope
    )


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "default", "rope_theta": 10000.0},
        {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
        LLAMA3,
    ],
    ids=["default", "linear", "llama3"],
)
def test_inverse_frequencies_match_transformers(rope):
    config = llama_config(rope)
    init = ROPE_INIT_FUNCTIONS.get(rope["rope_type"], LlamaRotaryEmbedding.compute_default_rope_parameters)
    expected, attention_scaling = init(config)
    assert attention_scaling == 1.0
    torch.testing.assert_close(inverse_frequencies(HEAD_SIZE, rope_parameters(config)), expected, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_embedding_matches_transformers_bit_for_bit(dtype):
    config = llama_config(LLAMA3)
    positions = torch.tensor([0, 1, 2, 7, 100, 255, 3])
    query = torch.randn(len(positions), 4 * HEAD_SIZE, dtype=dtype)
    key = torch.randn(len(positions), 2 * HEAD_SIZE, dtype=dtype)

    # As the Llama layers do: q and k side by side in a fused projection's output, rotated in one pass.
    fused = torch.cat((query, key, torch.randn_like(key)), dim=-1)
    rotary = RotaryEmbedding.from_config(config, HEAD_SIZE)
    rotated = rotary.rotate_heads(fused[:, : query.shape[1] + key.shape[1]], *rotary.embed(positions, dtype))
    rotated_query, rotated_key = rotated.split([query.shape[1], key.shape[1]], dim=-1)

    cos, sin = LlamaRotaryEmbedding(config)(query, positions[None])
    # transformers' layout: [batch, heads, tokens, head_size]
    expected_query, expected_key = apply_rotary_pos_emb(
        query.view(1, -1, 4, HEAD_SIZE).transpose(1, 2), key.view(1, -1, 2, HEAD_SIZE).transpose(1, 2), cos, sin
    )
    torch.testing.assert_close(rotated_query, expected_query.transpose(1, 2).reshape_as(query), atol=0, rtol=0)
    torch.testing.assert_close(rotated_key, expected_key.transpose(1, 2).reshape_as(key), atol=0, rtol=0)


def test_rope_parameters_from_older_configs():
    config = SimpleNamespace(rope_theta=500.0, rope_scaling={"type": "linear", "factor": 2.0})
    assert rope_parameters(config) == {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}
    assert rope_parameters(SimpleNamespace()) == {"rope_type": "default", "rope_theta": 10000.0}


def test_unsupported_rope_type_names_the_supported_ones():
    with pytest.raises(ModelLoadError, match="'yarn' is not supported.*default, linear, llama3"):
        inverse_frequencies(HEAD_SIZE, {"rope_type": "yarn", "rope_theta": 1e4})


def test_rms_norm_matches_transformers_in_bfloat16():
    ours, theirs = RMSNorm(64, 1e-6), LlamaRMSNorm(64, eps=1e-6)
    weight = torch.randn(64)
    ours.weight.data.copy_(weight)
    theirs.weight.data.copy_(weight)
    ours, theirs = ours.to(torch.bfloat16), theirs.to(torch.bfloat16)
    hidden = torch.randn(5, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(ours(hidden), theirs(hidden), atol=0, rtol=0)


def test_merged_linear_equals_its_separate_projections():
    separate = [torch.nn.Linear(8, size) for size in (6, 2, 2)]
    merged = MergedLinear(8, [6, 2, 2], bias=True)
    for index, linear in enumerate(separate):
        merged.load_shard("weight", index, linear.weight.data)
        merged.load_shard("bias", index, linear.bias.data)
    x = torch.randn(3, 8)
    for part, linear in zip(merged.split(merged(x)), separate, strict=True):
        torch.testing.assert_close(part, linear(x))
    with pytest.raises(ValueError, match=r"shard 1 weight expects \(2, 8\), got \(3, 8\)"):
        merged.load_shard("weight", 1, torch.zeros(3, 8))


def test_unknown_activation_is_a_load_error():
    assert activation_function("relu") is torch.nn.functional.relu
    with pytest.raises(ModelLoadError, match="'tanhshrink' is not supported"):
        activation_function("tanhshrink")

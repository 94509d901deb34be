"""The parts of the embedding path on their own: prompt attention, poolers, sentence-transformers configs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.errors import ModelLoadError
from pagedllm_core.pooling.attention import PromptAttention
from pagedllm_core.pooling.pooler import Pooler, PoolingType, finish_embedding
from pagedllm_core.pooling.sentence_transformers import read_sentence_transformers_config

LENGTHS = [5, 1, 9, 3]


def _metadata(lengths: list[int]) -> AttentionMetadata:
    query_start_loc = torch.tensor([0, *lengths]).cumsum(0).int()
    num_tokens = sum(lengths)
    return AttentionMetadata(
        slot_mapping=torch.full((num_tokens,), -1),
        query_start_loc=query_start_loc,
        seq_lens=torch.tensor(lengths, dtype=torch.int32),
        block_tables=torch.empty(len(lengths), 0, dtype=torch.int32),
        max_query_len=max(lengths),
        max_seq_len=max(lengths),
    )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lengths", [LENGTHS, [4, 4]], ids=["padded", "equal-lengths"])
def test_prompt_attention_matches_attention_per_sequence(causal, lengths):
    torch.manual_seed(0)
    num_heads, num_kv_heads, head_size = 4, 2, 8
    spec = AttentionSpec(num_heads, num_kv_heads, head_size, head_size**-0.5, 16, torch.float32, torch.device("cpu"))
    backend = PromptAttention(spec, causal=causal)
    num_tokens = sum(lengths)
    query = torch.randn(num_tokens, num_heads, head_size)
    key, value = torch.randn(2, num_tokens, num_kv_heads, head_size)
    metadata = _metadata(lengths)

    backend.prepare(metadata)
    output = backend.forward(query, key, value, None, metadata)

    assert (metadata.backend_data.mask is None) == (len(set(lengths)) == 1)
    start = 0
    for length in lengths:
        rows = slice(start, start + length)
        expected = F.scaled_dot_product_attention(
            query[rows].transpose(0, 1), key[rows].transpose(0, 1), value[rows].transpose(0, 1),
            is_causal=causal, enable_gqa=True,
        ).transpose(0, 1)
        torch.testing.assert_close(output[rows], expected)
        start += length


@pytest.mark.parametrize("pooling_type", list(PoolingType))
def test_pooler_pools_each_sequence(pooling_type):
    hidden = torch.randn(sum(LENGTHS), 6)
    pooled = Pooler(pooling_type, normalize=True)(hidden, _metadata(LENGTHS).query_start_loc)
    start = 0
    for row, length in enumerate(LENGTHS):
        states = hidden[start : start + length]
        expected = {"LAST": states[-1], "MEAN": states.mean(0), "CLS": states[0]}[pooling_type.value]
        torch.testing.assert_close(pooled[row], expected)
        start += length


def test_matryoshka_cut_is_normalized_again():
    embedding = torch.tensor([3.0, 4.0, 12.0])
    assert finish_embedding(embedding, 2, normalize=True) == pytest.approx([0.6, 0.8])
    assert finish_embedding(embedding, None, normalize=False) == [3.0, 4.0, 12.0]


def _write_sentence_transformers(directory, pooling: dict, with_normalize: bool) -> None:
    modules = [{"path": "", "type": "sentence_transformers.models.Transformer"},
               {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if with_normalize:
        modules.append({"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling))


def test_sentence_transformers_config(tmp_path):
    _write_sentence_transformers(tmp_path, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, False)
    config = read_sentence_transformers_config(tmp_path)
    assert (config.pooling_type, config.normalize, config.max_seq_length) == ("CLS", False, None)


def test_unsupported_sentence_transformers_pooling_is_refused(tmp_path):
    _write_sentence_transformers(tmp_path, {"pooling_mode_max_tokens": True}, True)
    with pytest.raises(ModelLoadError, match="pooling_mode_max_tokens.* is not supported"):
        read_sentence_transformers_config(tmp_path)

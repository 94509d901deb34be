"""``LLM(task=...)``: which task a model gets, and the errors of ``LLM.embed``."""

from __future__ import annotations

import pytest

from pagedllm_core.entrypoints.llm import LLM
from pagedllm_core.errors import ConfigError
from pagedllm_core.pooling.params import PoolingParams


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return LLM(str(minilm_dir))


def test_sentence_transformers_checkpoint_is_detected_as_embedding_model(minilm):
    assert minilm.task == "embed" and minilm.llm_engine.max_model_len == 256  # sentence_bert_config's max_seq_length
    with pytest.raises(ConfigError, match="LLM.generate\\(\\) needs a model loaded with task='generate'"):
        minilm.generate("hello")


def test_encoder_cannot_generate(minilm_dir):
    with pytest.raises(ConfigError, match="BertModel is an encoder"):
        LLM(str(minilm_dir), task="generate")


def test_decoder_generates_by_default_and_embed_needs_the_task(tiny_model_dir):
    llm = LLM(str(tiny_model_dir("LlamaForCausalLM")), num_kv_blocks=16, max_model_len=128)
    assert llm.task == "generate"
    with pytest.raises(ConfigError, match="LLM.embed\\(\\) needs a model loaded with task='embed'"):
        llm.embed("hello")


def test_prompt_errors(minilm):
    with pytest.raises(ValueError, match="maximum context length is 256 tokens. However, you requested 302 tokens"):
        minilm.embed("word " * 300, use_tqdm=False)
    with pytest.raises(ValueError, match="must not be empty"):
        minilm.embed("", use_tqdm=False)
    with pytest.raises(ValueError, match="token ids must be in \\[0, 30522\\)"):
        minilm.embed({"prompt_token_ids": [101, 40000, 102]}, use_tqdm=False)
    with pytest.raises(ValueError, match="2 PoolingParams for 1 prompts"):
        minilm.embed("hi", [PoolingParams(), PoolingParams()], use_tqdm=False)


def test_truncate_prompt_tokens_keeps_the_last_tokens(minilm):
    output = minilm.embed("word " * 300, truncate_prompt_tokens=256, use_tqdm=False)[0]
    assert len(output.prompt_token_ids) == 256 and output.outputs.hidden_size == 384


def test_dimensions_need_a_matryoshka_model(minilm):
    with pytest.raises(ValueError, match="not a Matryoshka model"):
        minilm.embed("hi", PoolingParams(dimensions=64), use_tqdm=False)
    assert len(minilm.embed("hi", PoolingParams(dimensions=384), use_tqdm=False)[0].outputs.embedding) == 384


def test_bad_pooler_config_names_the_field(minilm_dir):
    with pytest.raises(ConfigError, match="override_pooler_config.pooling_type"):
        LLM(str(minilm_dir), override_pooler_config={"pooling_type": "MAX"})

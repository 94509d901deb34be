"""The ``gguf`` method on K-quant GGUF files written at test time.

gguf-py can read K-quants but not write them, so ``k_quantizer`` writes the files:

- the default model re-quantized as llama.cpp's Q4_K_M would store it: its down projections (the only
  ones whose 1536-value rows fit 256-value super-blocks) in K-quants (Q4_K, Q5_K and Q6_K here, to
  cover all three), the 576-value-wide projections in the 32-value fallbacks (Q5_0; Q8_0 for some
  v projections, which leaves those layers' merged q/k/v dense; Q5_1 for some gate/up pairs);
- a small random llama model, in the default model's vocabulary, whose every linear layer is a K-quant
  (merged q/k/v and gate/up included, and the vocabulary projection tied to the embedding).

Each file runs with its blocks (``gguf``) and dense (``none``): same greedy tokens.
"""

from __future__ import annotations

import gc
from collections import Counter
from pathlib import Path

import pytest
import torch

from k_quantizer import q4_k_m_style_type, requantize_gguf, write_random_llama_gguf
from pagedllm_core import LLM, SamplingParams
from pagedllm_core.model.source import default_model_source
from pagedllm_quant_gguf.blocks import Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, dequantize
from pagedllm_quant_gguf.layer import GGUFLinear

RANDOM_MODEL_TYPES = {
    "attn_q": Q4_K, "attn_k": Q4_K, "attn_v": Q4_K, "attn_output": Q6_K,
    "ffn_gate": Q5_K, "ffn_up": Q5_K, "ffn_down": Q4_K, "token_embd": Q6_K,
}  # fmt: skip
RANDOM_MODEL_LAYERS = 2
# What each file's layers run from under ``gguf``: ggml type -> number of layers.
EXPECTED_LAYER_TYPES = {
    "default model, Q4_K_M-style": {
        Q5_0: 20 + 30 + 15,  # qkv where v is Q5_0 too (2 layers in 3), o, gate_up in even layers
        Q5_1: 15,  # gate_up in odd layers
        Q4_K: 10, Q5_K: 10, Q6_K: 10,  # down
        Q8_0: 1,  # the lm_head stored as the (unchanged) Q8_0 embedding
    },
    "random model, all K-quants": {
        Q4_K: 2 * RANDOM_MODEL_LAYERS,  # qkv, down
        Q6_K: RANDOM_MODEL_LAYERS + 1,  # o, and the lm_head stored as the Q6_K embedding
        Q5_K: RANDOM_MODEL_LAYERS,  # gate_up
    },
}
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, a small robot"]


@pytest.fixture(scope="module")
def k_quant_files(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("k-quants")
    source = default_model_source()
    default_file = source.directory / source.gguf_file

    files = dict(zip(EXPECTED_LAYER_TYPES, [directory / "default-q4_k_m.gguf", directory / "random-k-quants.gguf"]))
    requantize_gguf(default_file, files["default model, Q4_K_M-style"], q4_k_m_style_type)
    write_random_llama_gguf(
        default_file, files["random model, all K-quants"], RANDOM_MODEL_TYPES, num_layers=RANDOM_MODEL_LAYERS
    )
    return files


@pytest.mark.parametrize("file", EXPECTED_LAYER_TYPES)
def test_k_quant_blocks_give_the_dense_models_tokens(k_quant_files, file):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    tokens = {}
    for mode in ("gguf", "none"):
        llm = LLM(model=str(k_quant_files[file]), quantization=mode, dtype="float32", max_model_len=256)
        layers = [module for module in llm.llm_engine.executor.worker.model_runner.model.modules() if isinstance(module, GGUFLinear)]
        if mode == "gguf":
            assert Counter(layer.quant_type for layer in layers) == EXPECTED_LAYER_TYPES[file]
            check_both_paths_agree(layers)
        else:
            assert not layers
        # One prompt at a time decodes through the blocks; all at once, prefill takes the dense path.
        alone = [llm.generate(prompt, params, use_tqdm=False)[0] for prompt in PROMPTS]
        together = llm.generate(PROMPTS * 2, params, use_tqdm=False)
        tokens[mode] = [output.outputs[0].token_ids for output in alone + together]
        del llm, layers
        gc.collect()
    assert tokens["gguf"] == tokens["none"]


def check_both_paths_agree(layers: list[GGUFLinear]) -> None:
    """For one layer of each K-quant type: the C++ dequantizer equals the reference bit for bit, and the
    blocks' products (small steps) equal the dequantized weight's (large steps)."""
    for quant_type in (Q4_K, Q5_K, Q6_K):
        layer = next(layer for layer in layers if layer.quant_type == quant_type)
        weight = dequantize(layer.blocks, quant_type, layer.in_features)
        assert torch.equal(layer.dequantized_weight(), weight)
        for num_rows in (1, 7, 16, 17, 65):
            hidden = torch.randn(num_rows, layer.in_features, generator=torch.Generator().manual_seed(num_rows))
            torch.testing.assert_close(layer(hidden), hidden @ weight.T, rtol=1e-4, atol=1e-4)

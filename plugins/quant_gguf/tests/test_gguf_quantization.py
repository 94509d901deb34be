"""The ``gguf`` quantization method, on the default model (SmolLM2-135M-Instruct, a Q4_1 GGUF)."""

from pathlib import Path

import pytest
import torch

from pagedllm_core import LLM, SamplingParams
from pagedllm_core.errors import UnsupportedConfigError
from pagedllm_core.model.quantization import QuantizationTarget
from pagedllm_core.model.source import ModelSource
from pagedllm_quant_gguf.layer import MAX_BLOCK_ROWS, GGUFLinear
from pagedllm_quant_gguf.method import GGUFQuantization, _row_order

Q4_1, Q8_0 = 3, 8
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, a small robot"]


@pytest.fixture(scope="module")
def llms():
    """The default model with its blocks (``auto``) and with dense weights only (``none``)."""
    return {mode: LLM(quantization=mode, dtype="float32", max_model_len=256) for mode in ("auto", "none")}


def model_of(llm):
    return llm.llm_engine.executor.worker.model_runner.model


def test_auto_runs_every_linear_layer_from_its_blocks(llms):
    model = model_of(llms["auto"])
    layers = {name: module for name, module in model.named_modules() if isinstance(module, GGUFLinear)}
    assert len(layers) == 30 * 4 + 1  # qkv, o, gate_up, down per layer, and the tied lm_head
    assert layers["model.layers.0.self_attn.qkv_proj"].quant_type == Q4_1
    assert layers["lm_head"].quant_type == Q8_0  # stored as the Q8_0 token embedding
    assert not any(isinstance(module, GGUFLinear) for module in model_of(llms["none"]).modules())


@pytest.mark.parametrize("num_rows", [1, 3, MAX_BLOCK_ROWS, MAX_BLOCK_ROWS + 1])
def test_both_paths_of_a_layer_agree(llms, num_rows):
    model = model_of(llms["auto"])
    for layer in (model.model.layers[3].self_attn.qkv_proj, model.model.layers[7].mlp.down_proj, model.lm_head):
        hidden = torch.randn(num_rows, layer.in_features, generator=torch.Generator().manual_seed(num_rows))
        torch.testing.assert_close(layer(hidden), layer.dense(hidden), rtol=1e-4, atol=1e-4)


def test_greedy_tokens_equal_the_dense_model(llms):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    # One prompt at a time decodes through the blocks; all at once, some steps take the dense path.
    alone = {mode: [llm.generate(prompt, params, use_tqdm=False)[0] for prompt in PROMPTS] for mode, llm in llms.items()}
    together = {mode: llm.generate(PROMPTS * 2, params, use_tqdm=False) for mode, llm in llms.items()}
    for runs in (alone, together):
        assert [out.outputs[0].token_ids for out in runs["auto"]] == [out.outputs[0].token_ids for out in runs["none"]]


def test_row_order_finds_permuted_rows_and_refuses_other_weights():
    weight = torch.randn(6, 32)
    permutation = torch.tensor([3, 0, 5, 1, 4, 2])
    order = _row_order(weight[permutation], weight)
    assert torch.equal(weight[permutation][order], weight)
    assert _row_order(weight, weight).tolist() == list(range(6))
    changed = weight.clone()
    changed[2, 7] += 1e-3
    assert _row_order(weight, changed) is None


def test_unsupported_targets_are_named():
    safetensors_dir = ModelSource("tiny", Path("/nonexistent"))
    target = QuantizationTarget(safetensors_dir, hf_config=None, dtype=torch.bfloat16, device=torch.device("cuda"))
    reasons = " ".join(GGUFQuantization.unsupported_reasons(target))
    assert "not a GGUF file" in reasons and "CPU" in reasons and "float32" in reasons


def test_asking_for_gguf_on_a_dense_checkpoint_is_an_error(tmp_path):
    from pagedllm_core.testing import build_tiny_model

    directory = build_tiny_model(tmp_path / "tiny", "LlamaForCausalLM")
    with pytest.raises(UnsupportedConfigError, match="quantization 'gguf' cannot run this model: the checkpoint is not a GGUF"):
        LLM(model=str(directory), quantization="gguf")

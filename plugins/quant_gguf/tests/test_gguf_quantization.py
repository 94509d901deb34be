"""The ``gguf`` quantization method, on the default model (SmolLM2-135M-Instruct, a Q4_1 GGUF)."""

from pathlib import Path

import pytest
import torch

from pagedllm_core import LLM, SamplingParams
from pagedllm_core.errors import ConfigError, UnsupportedConfigError
from pagedllm_core.model.quantization import QuantizationTarget
from pagedllm_core.model.source import ModelSource
from pagedllm_quant_gguf.layer import GGUFLinear
from pagedllm_quant_gguf.kernels import load_kernels
from pagedllm_quant_gguf.options import default_max_block_rows
from pagedllm_quant_gguf.blocks import dequantize
from pagedllm_quant_gguf.method import GGUFQuantization, _unpermuted_rows

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


def layer_pairs(llms):
    """(GGUF layer, the dense layer the same checkpoint loads into with quantization none)."""
    quantized, dense = model_of(llms["auto"]), model_of(llms["none"])
    for path in ("model.layers.3.self_attn.qkv_proj", "model.layers.7.mlp.down_proj", "model.layers.0.self_attn.o_proj"):
        yield quantized.get_submodule(path), dense.get_submodule(path)
    yield quantized.lm_head, dense.lm_head


def dense_weight(layer) -> torch.Tensor:
    """The float32 weight of a dense layer, plain or prepacked for oneDNN."""
    if hasattr(layer, "weight"):
        return layer.weight
    return layer(torch.eye(layer.in_features)).T - (0 if layer.bias is None else layer.bias.unsqueeze(-1))


def test_the_blocks_are_the_dense_weights_bit_for_bit_and_no_dense_copy_is_kept(llms):
    for gguf_layer, dense_layer in layer_pairs(llms):
        expected = dense_weight(dense_layer)
        assert torch.equal(dequantize(gguf_layer.blocks, gguf_layer.quant_type, gguf_layer.in_features), expected)
        assert torch.equal(gguf_layer.dequantized_weight(), expected)  # the C++ dequantizer, for large steps
        assert not any(parameter.numel() == expected.numel() for parameter in gguf_layer.parameters())


@pytest.mark.parametrize("num_rows", [1, 3, 16, 17, 64, 65])
def test_a_layer_agrees_with_the_dense_layer_at_every_step_size(llms, num_rows):
    for gguf_layer, dense_layer in layer_pairs(llms):
        hidden = torch.randn(num_rows, gguf_layer.in_features, generator=torch.Generator().manual_seed(num_rows))
        torch.testing.assert_close(gguf_layer(hidden), dense_layer(hidden), rtol=1e-4, atol=1e-4)


def test_greedy_tokens_equal_the_dense_model(llms):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    # One prompt at a time decodes through the blocks in steps of one row; all at once, in steps of several
    # (which dequantize where max_block_rows limits the blocks' steps: below the 64 of an AVX2 build).
    alone = {mode: [llm.generate(prompt, params, use_tqdm=False)[0] for prompt in PROMPTS] for mode, llm in llms.items()}
    together = {mode: llm.generate(PROMPTS * 2, params, use_tqdm=False) for mode, llm in llms.items()}
    for runs in (alone, together):
        assert [out.outputs[0].token_ids for out in runs["auto"]] == [out.outputs[0].token_ids for out in runs["none"]]


def test_unpermuting_undoes_llama_cpps_rotary_permutation():
    num_heads, head_size = 3, 8
    rows = torch.arange(num_heads * head_size)
    # llama.cpp's convert script: w.reshape(n_head, 2, head_size // 2, ...).swapaxes(1, 2)
    permuted = rows.reshape(num_heads, 2, head_size // 2).swapaxes(1, 2).reshape(-1)
    assert torch.equal(permuted[_unpermuted_rows(len(rows), num_heads)], rows)


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


def test_max_block_rows_option_reaches_every_layer_and_outputs_stay_greedy_equal(llms):
    llm = LLM(dtype="float32", max_model_len=256, plugin_options={"quantization": {"max_block_rows": 0}})
    layers = [module for module in model_of(llm).modules() if isinstance(module, GGUFLinear)]
    assert layers and all(layer.max_block_rows == 0 for layer in layers)
    default = default_max_block_rows(load_kernels())
    assert all(layer.max_block_rows == default for layer in model_of(llms["auto"]).modules() if isinstance(layer, GGUFLinear))
    params = SamplingParams(temperature=0.0, max_tokens=8)
    # Every step now dequantizes: the same weights bit for bit, so the same greedy tokens.
    expected = [output.outputs[0].token_ids for output in llms["auto"].generate(PROMPTS[:1], params)]
    assert [output.outputs[0].token_ids for output in llm.generate(PROMPTS[:1], params)] == expected


def test_int8_activations_option_reaches_every_layer_and_only_small_steps_round(llms):
    max_block_rows = 16
    llm = LLM(dtype="float32", max_model_len=256,
              plugin_options={"quantization": {"int8_activations": True, "max_block_rows": max_block_rows}})
    layers = dict(model_of(llm).named_modules())
    assert all(layer.int8_activations for layer in layers.values() if isinstance(layer, GGUFLinear))
    assert not any(layer.int8_activations for layer in model_of(llms["auto"]).modules() if isinstance(layer, GGUFLinear))
    layer = layers["model.layers.7.mlp.down_proj"]
    weight = layer.dequantized_weight()
    for num_rows in (1, max_block_rows, max_block_rows + 1):
        hidden = torch.randn(num_rows, layer.in_features, generator=torch.Generator().manual_seed(num_rows))
        rounded = layer._kernels.gguf_linear(hidden, layer.blocks, layer.quant_type, None, int8_activations=True)
        expected = rounded if num_rows <= max_block_rows else hidden @ weight.T  # larger steps stay float32
        torch.testing.assert_close(layer(hidden), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(rounded, hidden @ weight.T, rtol=1e-5, atol=1e-5)
    output = llm.generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_tokens=8))[0].outputs[0]
    assert len(output.token_ids) == 8 and "Paris" in output.text


def test_bad_gguf_options_name_the_option_and_what_it_takes():
    with pytest.raises(ConfigError, match=r"plugin_options.quantization for quantizer 'gguf': max_block_rows: .*"
                                          r"greater than or equal to 0.*its options are: max_block_rows, int8_activations"):
        LLM(dtype="float32", plugin_options={"quantization": {"max_block_rows": -1}})
    with pytest.raises(ConfigError, match="block_rows: unknown setting"):
        LLM(dtype="float32", plugin_options={"quantization": {"block_rows": 4}})
    with pytest.raises(ConfigError, match="plugin_options.quantization is set but no quantizer runs"):
        LLM(dtype="float32", quantization="none", plugin_options={"quantization": {"max_block_rows": 4}})

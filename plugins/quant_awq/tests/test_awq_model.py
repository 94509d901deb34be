"""AWQ checkpoints of tiny models, made by ``pagedllm quantize --method awq``, loaded and run by the ``awq`` method.

The oracle: the same checkpoint dequantized (torch reference) into a dense float32 checkpoint, run with
``quantization="none"``, gives the same greedy tokens.
"""

import json

import pytest
import torch

from pagedllm_core import LLM, SamplingParams
from pagedllm_core.entrypoints.cli import main
from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ModelLoadError, UnsupportedConfigError
from pagedllm_core.model.model_info import resolve_model_info
from pagedllm_core.model.quantization import QuantizationTarget
from pagedllm_core.plugins import load_plugins
from pagedllm_core.registry import Registry
from pagedllm_core.testing import build_tiny_model
from pagedllm_core.worker.model_setup import build_quantization
from pagedllm_quant_awq.export import write_dequantized_checkpoint
from pagedllm_quant_awq.layer import AWQLinear
from pagedllm_quant_awq.quantize import AWQSettings, quantize_awq

PROMPTS = ["The quick brown fox", "Hello, world! How are", "Numbers: 0 1 2 3", "Once upon a time there"]
GREEDY = SamplingParams(max_tokens=32, temperature=0)
SMALL = AWQSettings(sequence_length=64, max_sequences=4)


def make_checkpoints(root, architecture):
    """(AWQ checkpoint, its dequantized dense twin) of a tiny model of ``architecture``."""
    float_model = build_tiny_model(root / "float", architecture)
    awq = quantize_awq(str(float_model), root / "awq", SMALL)
    write_dequantized_checkpoint(awq, root / "dense")
    return awq, root / "dense"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("llama"), "LlamaForCausalLM")


def model_of(llm):
    return llm.llm_engine.executor.worker.model_runner.model


def greedy_tokens(llm):
    return [output.outputs[0].token_ids for output in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]


def test_the_checkpoint_has_autoawq_s_layout(checkpoints):
    from safetensors import safe_open

    awq, _ = checkpoints
    config = json.loads((awq / "config.json").read_text())["quantization_config"]
    assert config == {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True, "version": "gemm",
                      "modules_to_not_convert": None, "lm_head": False}
    with safe_open(awq / "model.safetensors", framework="pt") as checkpoint:
        prefix = "model.layers.0.mlp.gate_proj"
        assert checkpoint.get_tensor(f"{prefix}.qweight").shape == (64, 128 // 8)  # [in, out / 8]
        assert checkpoint.get_tensor(f"{prefix}.qweight").dtype == torch.int32
        assert checkpoint.get_tensor(f"{prefix}.qzeros").shape == (1, 128 // 8)
        assert checkpoint.get_tensor(f"{prefix}.scales").dtype == torch.float16
        assert f"{prefix}.weight" not in checkpoint.keys()


@pytest.mark.parametrize(
    "architecture,quantization",
    [("LlamaForCausalLM", "auto"), ("LlamaForCausalLM", "awq"), ("Qwen2ForCausalLM", "auto"), ("MistralForCausalLM", "auto")],
)
def test_greedy_tokens_equal_the_dequantized_dense_model(checkpoints, tmp_path, architecture, quantization):
    awq, dense = checkpoints if architecture == "LlamaForCausalLM" else make_checkpoints(tmp_path, architecture)
    quantized_llm = LLM(model=str(awq), quantization=quantization, dtype="float32", max_model_len=256)
    layers = [module for module in model_of(quantized_llm).modules() if isinstance(module, AWQLinear)]
    assert len(layers) == 2 * 4  # qkv, o, gate_up, down in each of the 2 layers; lm_head stays dense
    # Only packed 4-bit words, group scales and zeros: no dense [out, in] weight is kept.
    assert all(tensor.dtype in (torch.int32, torch.float16) for layer in layers for tensor in layer.buffers())
    dense_llm = LLM(model=str(dense), quantization="none", dtype="float32", max_model_len=256)
    assert greedy_tokens(quantized_llm) == greedy_tokens(dense_llm)


def test_a_many_row_step_uses_the_tiled_path_and_agrees(checkpoints):
    awq, _ = checkpoints
    llm = LLM(model=str(awq), dtype="float32", max_model_len=256)
    layer = next(module for module in model_of(llm).modules() if isinstance(module, AWQLinear))
    x = torch.randn(40, layer.in_features)  # more rows than the fused kernel takes
    expected = torch.cat([layer(row.unsqueeze(0)) for row in x])
    torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-4)


def test_decode_steps_call_the_kernel_from_the_decoder_program_with_the_same_tokens(checkpoints):
    awq, _ = checkpoints
    native = LLM(model=str(awq), dtype="float32", max_model_len=256)
    assert native.llm_engine.executor.worker.model_runner.native_decoder is not None
    eager = LLM(model=str(awq), dtype="float32", max_model_len=256, enforce_eager=True)
    assert greedy_tokens(native) == greedy_tokens(eager)


def test_without_the_plugin_the_error_names_it(checkpoints, monkeypatch):
    awq, _ = checkpoints
    monkeypatch.setenv("PAGEDLLM_PLUGINS", "quant_gguf")  # entry-point plugins other than this one
    registry = Registry.from_plugin_manager(load_plugins().manager)
    config = EngineConfig(model=str(awq), dtype="float32")
    info = resolve_model_info(config)
    target = QuantizationTarget(info.source, info.hf_config, info.dtype, info.device)
    with pytest.raises(UnsupportedConfigError, match=r"quantized as 'awq'.*pagedllm\[awq\]"):
        build_quantization(config, registry, target)


def test_awq_on_a_dense_checkpoint_says_why(checkpoints):
    _, dense = checkpoints
    with pytest.raises(UnsupportedConfigError, match="no quantization_config with quant_method 'awq'"):
        LLM(model=str(dense), quantization="awq", max_model_len=256)


def test_quantization_none_cannot_load_packed_weights(checkpoints):
    awq, _ = checkpoints
    with pytest.raises(ModelLoadError, match="lacks"):
        LLM(model=str(awq), quantization="none", dtype="float32", max_model_len=256)


def test_the_quantize_command_writes_a_checkpoint_that_loads(tmp_path):
    float_model = build_tiny_model(tmp_path / "float", "LlamaForCausalLM", seed=3)
    assert main(["quantize", "--method", "awq", "--group-size", "32", "--no-clip", str(float_model),
                 str(tmp_path / "awq")]) == 0
    assert json.loads((tmp_path / "awq" / "config.json").read_text())["quantization_config"]["group_size"] == 32
    llm = LLM(model=str(tmp_path / "awq"), dtype="float32", max_model_len=256)
    assert len(greedy_tokens(llm)[0]) == 32


@pytest.mark.parametrize("tied", [True, False])
def test_a_quantized_lm_head_runs_from_4_bits_and_equals_the_dequantized_model(tmp_path, tied):
    float_model = build_tiny_model(tmp_path / "float", "LlamaForCausalLM", seed=5, tie_word_embeddings=tied)
    assert main(["quantize", "--method", "awq", "--quantize-lm-head", "--group-size", "32", str(float_model),
                 str(tmp_path / "awq")]) == 0
    config = json.loads((tmp_path / "awq" / "config.json").read_text())
    assert config["quantization_config"]["lm_head"] is True and config["tie_word_embeddings"] is False
    write_dequantized_checkpoint(tmp_path / "awq", tmp_path / "dense")

    quantized_llm = LLM(model=str(tmp_path / "awq"), dtype="float32", max_model_len=256)
    model = model_of(quantized_llm)
    assert isinstance(model.lm_head, AWQLinear)
    assert model.model.embed_tokens.weight.dtype == torch.float32  # the embedding stays dense
    dense_llm = LLM(model=str(tmp_path / "dense"), quantization="none", dtype="float32", max_model_len=256)
    assert greedy_tokens(quantized_llm) == greedy_tokens(dense_llm)


def test_a_group_size_that_does_not_divide_the_layers_is_refused(tmp_path):
    float_model = build_tiny_model(tmp_path / "float", "LlamaForCausalLM")
    with pytest.raises(ValueError, match="group_size 48 must divide"):
        quantize_awq(str(float_model), tmp_path / "awq", AWQSettings(group_size=48))

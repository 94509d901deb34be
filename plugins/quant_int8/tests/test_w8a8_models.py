"""W8A8 checkpoints end to end: made by `pagedllm quantize`, hand-made as llm-compressor writes them, refused."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pagedllm_core.entrypoints.cli import main
from pagedllm_core.entrypoints.llm import LLM
from pagedllm_core.errors import UnsupportedConfigError
from pagedllm_core.sampling_params import SamplingParams
from pagedllm_core.testing import build_tiny_model
from pagedllm_quant_int8.convert import w8a8_quantization_config
from pagedllm_quant_int8.kernel import quantize_per_channel
from pagedllm_quant_int8.layer import Int8Linear

PROMPTS = ["The quick brown fox", "Hello, world! How are you", "Once upon a time there was"]
GREEDY = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)


def greedy_tokens(model: Path, **settings) -> list[list[int]]:
    llm = LLM(model=str(model), kv_cache_memory="8MiB", **settings)
    return [list(output.outputs[0].token_ids) for output in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]


def dequantized_copy(quantized: Path, output: Path) -> Path:
    """The same model with every int8 weight replaced by ``weight * weight_scale`` in float32, unquantized."""
    tensors = load_file(quantized / "model.safetensors")
    dense = {}
    for name, tensor in tensors.items():
        if name.endswith(".weight_scale"):
            continue
        scale = tensors.get(name.removesuffix(".weight") + ".weight_scale")
        dense[name] = tensor.float() * scale.float().reshape(-1, 1) if scale is not None else tensor
    output.mkdir()
    save_file(dense, output / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((quantized / "config.json").read_text())
    del config["quantization_config"]
    (output / "config.json").write_text(json.dumps(config))
    for path in quantized.glob("tokenizer*"):
        (output / path.name).write_bytes(path.read_bytes())
    return output


@pytest.fixture(scope="module")
def quantized_llama(tmp_path_factory):
    """A tiny Llama made W8A8 by `pagedllm quantize --method w8a8`."""
    directory = tmp_path_factory.mktemp("w8a8")
    # A gentler init than the tiny default (0.2), so that greedy steps are not near-ties that any
    # rounding of the activations could flip.
    source = build_tiny_model(directory / "float", "LlamaForCausalLM", initializer_range=0.05)
    assert main(["quantize", "--method", "w8a8", str(source), str(directory / "int8")]) == 0
    return directory / "int8"


def test_quantize_writes_a_compressed_tensors_checkpoint(quantized_llama):
    config = json.loads((quantized_llama / "config.json").read_text())
    assert config["quantization_config"] == w8a8_quantization_config(["lm_head"])
    tensors = load_file(quantized_llama / "model.safetensors")
    assert tensors["model.layers.0.self_attn.q_proj.weight"].dtype == torch.int8
    assert tensors["model.layers.0.mlp.down_proj.weight_scale"].shape == (64, 1)
    assert tensors["lm_head.weight"].dtype == torch.float32


def test_greedy_tokens_equal_the_dequantized_model(quantized_llama, tmp_path):
    llm = LLM(model=str(quantized_llama), kv_cache_memory="8MiB")
    model = llm.llm_engine.executor.worker.model_runner.model
    assert sum(isinstance(module, Int8Linear) for module in model.modules()) == 2 * 4  # qkv, o, gate_up, down
    del llm
    dense = dequantized_copy(quantized_llama, tmp_path / "dense")
    assert greedy_tokens(quantized_llama) == greedy_tokens(dense, quantization="none")


def test_decode_steps_call_the_int8_operator_from_the_decoder_program_with_the_same_tokens(quantized_llama):
    native = LLM(model=str(quantized_llama), kv_cache_memory="8MiB", dtype="float32")
    assert native.llm_engine.executor.worker.model_runner.native_decoder is not None
    tokens = [list(output.outputs[0].token_ids) for output in native.generate(PROMPTS, GREEDY, use_tqdm=False)]
    assert tokens == greedy_tokens(quantized_llama, dtype="float32", enforce_eager=True)


def test_an_int8_lm_head_of_a_tied_model_is_an_untied_copy_of_the_embedding(tmp_path):
    source = build_tiny_model(tmp_path / "float", "LlamaForCausalLM", initializer_range=0.05, tie_word_embeddings=True)
    assert "lm_head.weight" not in load_file(source / "model.safetensors")
    quantized = tmp_path / "int8"
    assert main(["quantize", "--method", "w8a8", "--quantize-lm-head", str(source), str(quantized)]) == 0
    config = json.loads((quantized / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["quantization_config"]["ignore"] == []
    tensors = load_file(quantized / "model.safetensors")
    assert tensors["lm_head.weight"].dtype == torch.int8 and tensors["model.embed_tokens.weight"].dtype == torch.float32

    embedding = load_file(source / "model.safetensors")["model.embed_tokens.weight"]
    weight, scale = tensors["lm_head.weight"], tensors["lm_head.weight_scale"]
    assert torch.equal(weight, quantize_per_channel(embedding)[0])

    llm = LLM(model=str(quantized), kv_cache_memory="8MiB")
    lm_head = llm.llm_engine.executor.worker.model_runner.model.lm_head
    assert isinstance(lm_head, Int8Linear)
    # Greedy tokens of a tiny random model are near-ties that the int8 rounding of the last hidden
    # state can flip, so the logits are compared: within the kernel's 1% of the float output layer.
    hidden = torch.randn(8, embedding.shape[1])
    reference = hidden @ embedding.T
    assert (lm_head(hidden) - reference).norm() / reference.norm() < 1e-2
    outputs = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    assert all(len(output.outputs[0].token_ids) == GREEDY.max_tokens for output in outputs)


def test_loads_a_hand_made_llm_compressor_checkpoint(tmp_path):
    """Qwen2 (biased q/k/v), scales stored as [rows, 1] bfloat16 and zero points present, as
    llm-compressor writes them; one MLP projection on the ignore list stays dense."""
    source = build_tiny_model(tmp_path / "float", "Qwen2ForCausalLM", initializer_range=0.05)
    tensors = load_file(source / "model.safetensors")
    ignored = "model.layers.1.mlp.down_proj"
    for name in [name for name in tensors if name.endswith("proj.weight") and not name.startswith(ignored)]:
        weight, scale = quantize_per_channel(tensors[name])
        prefix = name.removesuffix(".weight")
        tensors[name] = weight
        tensors[f"{prefix}.weight_scale"] = scale[:, None].to(torch.bfloat16)
        tensors[f"{prefix}.weight_zero_point"] = torch.zeros(scale.shape[0], 1, dtype=torch.int8)
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = w8a8_quantization_config(["lm_head", ignored])
    (source / "config.json").write_text(json.dumps(config))

    llm = LLM(model=str(source), kv_cache_memory="8MiB")
    model = llm.llm_engine.executor.worker.model_runner.model
    quantized = {name for name, module in model.named_modules() if isinstance(module, Int8Linear)}
    assert "model.layers.0.self_attn.qkv_proj" in quantized and "model.layers.0.mlp.down_proj" in quantized
    assert ignored not in quantized
    outputs = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    assert all(len(output.outputs[0].token_ids) == GREEDY.max_tokens for output in outputs)


def test_other_compressed_tensors_schemes_are_refused_with_the_reason(quantized_llama, tmp_path):
    config = json.loads((quantized_llama / "config.json").read_text())
    config["quantization_config"]["config_groups"]["group_0"]["input_activations"]["dynamic"] = False
    broken = tmp_path / "static"
    broken.mkdir()
    for path in quantized_llama.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedConfigError, match="compressed-tensors.*only dynamic per-token is supported"):
        LLM(model=str(broken), kv_cache_memory="8MiB")

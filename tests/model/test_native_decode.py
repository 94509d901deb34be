"""Decode steps through the decoder program (pagedllm_core.model.native_decode) give what the layers' Python gives,
token for token and logprob for logprob, and the engine says why when a model cannot use it."""

import logging

import pytest
import torch
from torch import nn

from pagedllm_core.entrypoints.llm import LLM
from pagedllm_core.model.native_decode import (
    NativeDecoder,
    NativeDecodeUnavailable,
    build_native_decoder,
    native_linear_op,
)
from pagedllm_core.model.native_op import NativeOp
from pagedllm_core.sampling_params import SamplingParams

LLAMA_FAMILY = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]
# Prompts of different lengths: decode steps hold several sequences with contexts across block edges.
PROMPTS = ["Hello, world! The quick brown fox", "Once upon a time", "a b c d e f g h i j k l m n o p q r s t u v"]


def generate(model: str, enforce_eager: bool, **settings):
    """Greedy outputs (token ids and their top-3 logprobs) of PROMPTS, and the rows of each step the program ran."""
    llm = LLM(model=model, enforce_eager=enforce_eager, block_size=16, **settings)
    decoder = llm.llm_engine.executor.worker.model_runner.native_decoder
    assert (decoder is None) == enforce_eager
    native_steps = []
    if decoder is not None:
        forward = decoder.forward
        decoder.forward = lambda *args: native_steps.append(forward(*args)) or native_steps[-1]
    params = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True, logprobs=3)
    outputs = [
        (list(output.outputs[0].token_ids), [{k: v.logprob for k, v in step.items()} for step in output.outputs[0].logprobs])
        for output in llm.generate(PROMPTS, params, use_tqdm=False)
    ]
    return outputs, [len(step) for step in native_steps if step is not None]


@pytest.mark.parametrize("architecture", LLAMA_FAMILY)
def test_greedy_tokens_and_logprobs_equal_the_layers_python(architecture, tiny_model_dir):
    model = str(tiny_model_dir(architecture))
    expected, _ = generate(model, enforce_eager=True)
    actual, native_steps = generate(model, enforce_eager=False)
    assert len(native_steps) >= 23  # every plain decode step; the steps with long prompts ran in Python
    assert actual == expected


@pytest.mark.parametrize(
    "settings",
    [{"dtype": "bfloat16"}, {"dtype": "float16"}, {"kv_cache_dtype": "fp8_e4m3"}, {"kv_cache_dtype": "fp8_e5m2"}],
    ids=["bfloat16", "float16", "fp8_e4m3-cache", "fp8_e5m2-cache"],
)
def test_half_precision_and_fp8_caches_give_the_same_outputs(settings, tiny_model_dir):
    # In half precision the program's kernels round as the layers' torch ops do.
    model = str(tiny_model_dir("LlamaForCausalLM"))
    expected, _ = generate(model, enforce_eager=True, **settings)
    actual, native_steps = generate(model, enforce_eager=False, **settings)
    assert len(native_steps) >= 23
    assert actual == expected


def test_the_default_gguf_model_gives_the_same_outputs():
    # The default model runs from its Q4_1 blocks: the program calls the GGUF plugin's operator.
    expected, _ = generate(None, enforce_eager=True, dtype="float32")
    actual, native_steps = generate(None, enforce_eager=False, dtype="float32")
    assert len(native_steps) >= 23
    assert actual == expected


def test_speculative_verification_steps_run_in_the_program(tiny_model_dir):
    # A verifying step scores up to 4 positions per sequence: the cpu backend runs them as decode rows.
    model = str(tiny_model_dir("LlamaForCausalLM"))
    speculative = {"speculative_config": {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1}}
    expected, _ = generate(model, enforce_eager=True, **speculative)
    actual, native_steps = generate(model, enforce_eager=False, **speculative)
    assert any(rows > len(PROMPTS) for rows in native_steps)
    assert actual == expected


def test_models_without_a_decoder_program_decode_layer_by_layer(tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="pagedllm_core.model.native_decode"):
        opt = LLM(model=str(tiny_model_dir("OPTForCausalLM")))
    assert opt.llm_engine.executor.worker.model_runner.native_decoder is None
    assert "OPTForCausalLM has no decoder program" in caplog.text


def test_lora_and_layers_without_an_operator_keep_the_python_layers(tiny_model_dir, caplog):
    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")))
    runner = llm.llm_engine.executor.worker.model_runner
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="pagedllm_core.model.native_decode"):
        assert build_native_decoder(runner.model, runner.attention, cpu, False, lora_enabled=True) is None
        assert build_native_decoder(runner.model, runner.attention, cpu, True, lora_enabled=False) is None
        runner.model.model.layers[1].mlp.down_proj = nn.Identity()
        assert build_native_decoder(runner.model, runner.attention, cpu, False, lora_enabled=False) is None
    assert "LoRA adapters are enabled" in caplog.text
    assert "enforce_eager is set" in caplog.text
    assert "Identity layers have no native operator" in caplog.text


def test_dense_layers_are_aten_linear():
    layer = nn.Linear(4, 3)
    assert native_linear_op(layer) == NativeOp("aten::linear", (layer.weight, layer.bias))
    with pytest.raises(NativeDecodeUnavailable, match="ReLU layers have no native operator"):
        native_linear_op(nn.ReLU())


def test_the_program_refuses_unknown_operators_and_mismatched_calls(tiny_model_dir):
    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")))
    runner = llm.llm_engine.executor.worker.model_runner
    decoder: NativeDecoder = runner.native_decoder
    program = type(decoder.program)(2, 1, 16, 1e-6, 0, torch.ones(64))
    weight = torch.ones(64)
    dense = NativeOp("aten::linear", (torch.zeros(64, 64), None))
    with pytest.raises(RuntimeError, match="no_such_namespace::linear"):
        program.add_layer(weight, weight, NativeOp("no_such_namespace::linear"), dense, dense, dense, dense)
    with pytest.raises(RuntimeError, match="takes 3 arguments, got 5"):
        program.add_layer(weight, weight, NativeOp("aten::linear", (weight, None, 1, 2)), dense, dense, dense, dense)
    hidden = torch.zeros(1, 64)
    cos = sin = torch.zeros(1, 1, 16)
    with pytest.raises(RuntimeError, match="has no layers"):
        program.run(hidden, cos, sin, [], ())
    with pytest.raises(RuntimeError, match="got 1 KV caches for 2 layers"):
        decoder.program.run(hidden, cos, sin, runner.kv_caches[:1], ())

"""Start-up: backends chosen by name (a third-party one included), clear errors, pool sizing."""

import pytest

from pagedllm_core import LLM, SamplingParams
from pagedllm_core.errors import ConfigError, UnknownPluginTargetError, UnsupportedConfigError

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


def test_out_of_tree_backend_is_selected_by_name_and_used(tiny_model_dir):
    from pagedllm_example_backend.backend import ExampleAttentionBackend

    directory = str(tiny_model_dir("LlamaForCausalLM"))
    calls_before = ExampleAttentionBackend.num_forward_calls
    example = LLM(model=directory, dtype="float32", attention_backend="example")
    assert isinstance(example.llm_engine.executor.worker.model_runner.attention, ExampleAttentionBackend)
    tokens = example.generate("Hello there", GREEDY, use_tqdm=False)[0].outputs[0].token_ids
    assert ExampleAttentionBackend.num_forward_calls > calls_before
    reference = LLM(model=directory, dtype="float32").generate("Hello there", GREEDY, use_tqdm=False)
    assert tokens == reference[0].outputs[0].token_ids


def test_unknown_backend_lists_the_available_ones(tiny_model_dir):
    with pytest.raises(UnknownPluginTargetError, match=r"unknown attention backend 'nope'; available: .*'torch'"):
        LLM(model=str(tiny_model_dir("LlamaForCausalLM")), attention_backend="nope")


def test_backend_that_cannot_run_the_model_says_why_and_names_alternatives(tiny_model_dir, monkeypatch):
    from pagedllm_example_backend.backend import ExampleAttentionBackend

    monkeypatch.setattr(ExampleAttentionBackend, "unsupported_reasons", classmethod(lambda cls, spec: ["head size 16 unsupported"]))
    with pytest.raises(UnsupportedConfigError, match=r"head size 16 unsupported.*Backends that can: .*torch"):
        LLM(model=str(tiny_model_dir("LlamaForCausalLM")), attention_backend="example")


def test_invalid_settings_fail_early_naming_the_field():
    with pytest.raises(ConfigError, match=r"max_num_seqs: Input should be greater than or equal to 1 \(got 0\)"):
        LLM(model="unused", max_num_seqs=0)
    with pytest.raises(ConfigError, match="kv_cache_memory"):
        LLM(model="unused", kv_cache_memory="lots")
    with pytest.raises(ConfigError, match="unknown setting"):
        LLM(model="unused", gpu_blocks=3)


def test_pool_too_small_for_one_sequence_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ConfigError, match="one sequence of max_model_len=64 needs 4"):
        LLM(model=str(tiny_model_dir("LlamaForCausalLM")), max_model_len=64, num_kv_blocks=3)


def test_prompts_and_limits_are_validated_without_leaking_blocks(tiny_model_dir):
    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), max_model_len=32)
    with pytest.raises(ValueError, match="prompt has 40 tokens but the context is 32"):
        llm.generate({"prompt_token_ids": [5] * 40}, use_tqdm=False)
    with pytest.raises(ValueError, match="lower max_tokens to at most 27"):
        llm.generate({"prompt_token_ids": [5] * 5}, SamplingParams(max_tokens=100), use_tqdm=False)
    with pytest.raises(ValueError, match="prompt token ids must be in"):
        llm.generate({"prompt_token_ids": [10**7]}, use_tqdm=False)
    with pytest.raises(ValueError, match="one, or one per prompt"):
        llm.generate(["a", "b"], [SamplingParams()], use_tqdm=False)
    # A bad prompt in the middle of a batch queues nothing.
    with pytest.raises(ValueError):
        llm.generate(["fine", {"prompt_token_ids": []}], use_tqdm=False)
    assert not llm.llm_engine.has_unfinished_requests()
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0


def test_outputs_keep_input_order_and_accept_mixed_prompt_forms(tiny_model_dir):
    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32")
    tokenizer = llm.get_tokenizer()
    prompts = ["A long prompt that takes more steps to prefill than the others do", {"prompt_token_ids": tokenizer.encode("Hi")}]
    params = [SamplingParams(temperature=0, max_tokens=2), SamplingParams(temperature=0, max_tokens=9)]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    assert outputs[0].prompt == prompts[0] and outputs[1].prompt is None
    assert outputs[1].prompt_token_ids == prompts[1]["prompt_token_ids"]
    assert [len(o.outputs[0].token_ids) for o in outputs] == [2, 9]
    assert all(o.outputs[0].finish_reason == "length" for o in outputs)


def test_auto_dtype_avoids_emulated_bfloat16_on_the_cpu(monkeypatch):
    import torch

    from pagedllm_core.config import EngineConfig
    from pagedllm_core.model import model_info as model_setup

    cpu = torch.device("cpu")
    auto, explicit = EngineConfig.build(dtype="auto"), EngineConfig.build(dtype="bfloat16")
    monkeypatch.setattr(model_setup, "cpu_has_native_bfloat16", lambda: False)
    monkeypatch.setattr(model_setup, "cpu_has_native_float16", lambda: False)
    assert model_setup.fit_dtype_to_device(auto, torch.bfloat16, cpu, quantized=False) == torch.float32
    assert model_setup.fit_dtype_to_device(explicit, torch.bfloat16, cpu, quantized=False) == torch.bfloat16
    monkeypatch.setattr(model_setup, "cpu_has_native_bfloat16", lambda: True)
    assert model_setup.fit_dtype_to_device(auto, torch.bfloat16, cpu, quantized=False) == torch.bfloat16
    # Native bfloat16 does not make float16 native (AVX-512 BF16 CPUs emulate float16).
    assert model_setup.fit_dtype_to_device(auto, torch.float16, cpu, quantized=False) == torch.float32
    monkeypatch.setattr(model_setup, "cpu_has_native_float16", lambda: True)
    assert model_setup.fit_dtype_to_device(auto, torch.float16, cpu, quantized=False) == torch.float16


def test_auto_dtype_runs_quantized_checkpoints_in_float32_on_the_cpu(monkeypatch):
    import torch

    from pagedllm_core.config import EngineConfig
    from pagedllm_core.model import model_info as model_setup

    cpu, auto = torch.device("cpu"), EngineConfig.build(dtype="auto")
    monkeypatch.setattr(model_setup, "cpu_has_native_bfloat16", lambda: True)
    # Even where bfloat16 is native: the quantization plugins' CPU kernels take float32 activations.
    assert model_setup.fit_dtype_to_device(auto, torch.bfloat16, cpu, quantized=True) == torch.float32
    explicit = EngineConfig.build(dtype="bfloat16")
    assert model_setup.fit_dtype_to_device(explicit, torch.bfloat16, cpu, quantized=True) == torch.bfloat16
    # On a GPU the checkpoint's dtype stays.
    assert model_setup.fit_dtype_to_device(auto, torch.bfloat16, torch.device("cuda"), quantized=True) == torch.bfloat16


def test_the_default_gguf_model_runs_its_blocks_with_dtype_auto():
    import torch

    from pagedllm_core.config import EngineConfig
    from pagedllm_core.model.model_info import cpu_has_native_bfloat16, resolve_model_info

    assert resolve_model_info(EngineConfig.build()).dtype == torch.float32
    # Dequantized to dense layers, the GGUF is a bfloat16 model where the CPU multiplies bfloat16 natively.
    dense = torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32
    assert resolve_model_info(EngineConfig.build(quantization="none")).dtype == dense


def test_auto_backend_takes_the_compiled_cpu_backend_when_installed(tiny_model_dir):
    pytest.importorskip("pagedllm_attention_cpu")
    from pagedllm_attention_cpu.backend import CpuAttentionBackend

    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32")
    assert isinstance(llm.llm_engine.executor.worker.model_runner.attention, CpuAttentionBackend)


def test_auto_backend_falls_back_when_the_preferred_one_cannot_start(tiny_model_dir, monkeypatch, caplog):
    pytest.importorskip("pagedllm_attention_cpu")
    from pagedllm_attention_cpu.backend import CpuAttentionBackend
    from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend

    def fail_to_build(self, spec):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(CpuAttentionBackend, "__init__", fail_to_build)
    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32")
    assert isinstance(llm.llm_engine.executor.worker.model_runner.attention, TorchAttentionBackend)
    assert "'cpu' failed to start (no compiler today)" in caplog.text


def test_a_kv_cache_dtype_no_backend_keeps_is_refused_with_the_dtypes_it_can(tiny_model_dir):
    with pytest.raises(UnsupportedConfigError, match=r"kv_cache_dtype bfloat16 is not supported.*keeps: float32"):
        LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", kv_cache_dtype="bfloat16", attention_backend="torch")


def test_a_backend_lays_out_and_copies_its_own_cache(tiny_model_dir, monkeypatch):
    """A backend that declares another layout gets its cache allocated in it and copies blocks itself."""
    from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend

    layouts, copies = [], []
    default_shape = TorchAttentionBackend.kv_cache_shape.__func__
    default_copy = TorchAttentionBackend.copy_blocks.__func__

    def shape(cls, *args):
        layouts.append(args)
        return default_shape(cls, *args)

    def copy(cls, kv_cache, block_copies):
        copies.extend(block_copies)
        default_copy(cls, kv_cache, block_copies)

    monkeypatch.setattr(TorchAttentionBackend, "kv_cache_shape", classmethod(shape))
    monkeypatch.setattr(TorchAttentionBackend, "copy_blocks", classmethod(copy))
    llm = LLM(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", attention_backend="torch", block_size=4)
    assert layouts and layouts[0][1] == 4
    llm.generate("Hello", SamplingParams(n=3, temperature=1.0, seed=1, max_tokens=4, ignore_eos=True), use_tqdm=False)
    assert copies  # the siblings' shared last block was copied on write, by the backend

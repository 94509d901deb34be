"""The FP8 KV cache: the reference's quantization, scales, pool size, engine settings and bad combinations."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.attention.fp8_conformance import compare_fp8_backend, fp8_step
from pagedllm_core.attention.kv_quant import fp8_max, quantize_kv
from pagedllm_core.bench.attention import build_random_step
from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend
from pagedllm_core.entrypoints.llm import LLM
from pagedllm_core.errors import ConfigError, UnsupportedConfigError
from pagedllm_core.model.layers.attention import PagedAttention
from pagedllm_core.sampling_params import SamplingParams
from pagedllm_core.worker.kv_cache import KVCacheShape

FP8_DTYPES = [torch.float8_e4m3fn, torch.float8_e5m2]
PROMPTS = ["The quick brown fox", "Hello, world! How are you", "Once upon a time there was", "Numbers: 0 1 2"]


def engine_of(llm):
    return llm.llm_engine.executor.worker.model_runner


@pytest.mark.parametrize("cache_dtype", FP8_DTYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_backend_matches_the_reference_on_dequantized_values(cache_dtype, dtype):
    step, kv_scales = fp8_step(
        build_random_step(
            [37, 70, 9], [1, 20, 9], num_heads=4, num_kv_heads=2, head_size=32, block_size=16, dtype=dtype
        ),
        cache_dtype,
    )
    result = compare_fp8_backend(TorchAttentionBackend(step.spec), step, kv_scales)
    assert torch.equal(result.cache, result.expected_cache)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(result.output, result.expected_output, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("cache_dtype", FP8_DTYPES)
def test_quantizing_saturates_instead_of_overflowing(cache_dtype):
    values = torch.tensor([1e9, -1e9, 0.0, 3.0])
    stored = quantize_kv(values, torch.tensor(0.5), cache_dtype).float()
    assert stored.tolist() == [fp8_max(cache_dtype), -fp8_max(cache_dtype), 0.0, 6.0]


def test_fp8_blocks_hold_two_and_four_times_the_tokens():
    shapes = {dtype: KVCacheShape(30, 3, 64, dtype) for dtype in (torch.float32, torch.bfloat16, torch.float8_e4m3fn)}
    fp8_bytes = shapes[torch.float8_e4m3fn].bytes_per_block(16)
    assert shapes[torch.bfloat16].bytes_per_block(16) == 2 * fp8_bytes
    assert shapes[torch.float32].bytes_per_block(16) == 4 * fp8_bytes


def test_the_pool_holds_four_times_the_tokens_of_float32(tiny_model_dir):
    settings = dict(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", kv_cache_memory="2MiB")
    num_blocks = {
        dtype: LLM(kv_cache_dtype=dtype, **settings).llm_engine.executor.num_kv_blocks for dtype in ("auto", "fp8")
    }
    assert num_blocks["fp8"] == 4 * num_blocks["auto"]


def test_calculate_kv_scales_takes_amax_over_fp8_max_from_the_first_step():
    spec = AttentionSpec(4, 2, 16, 0.25, 16, torch.float8_e4m3fn, torch.device("cpu"), torch.float32,
                         calculate_kv_scales=True)
    layer = PagedAttention(TorchAttentionBackend(spec), 0, 4, 2, 16)
    calls = []

    class Recorder:
        def forward(self, *args, kv_scales):
            calls.append(tuple(float(scale) for scale in kv_scales))
            return args[0]

    layer.backend = Recorder()
    layer.backend.spec = spec
    key, value = torch.randn(5, 32), torch.randn(5, 32) * 3
    layer(torch.randn(5, 64), key, value, [None], None)
    layer(torch.randn(5, 64), key * 10, value * 10, [None], None)
    expected = (float(key.abs().max()) / 448, float(value.abs().max()) / 448)
    assert calls[0] == pytest.approx(expected) and calls[1] == calls[0]  # computed once, then kept


def test_scales_come_from_the_checkpoint_else_one(tiny_model_dir, tmp_path):
    directory = tiny_model_dir("LlamaForCausalLM")
    default = engine_of(LLM(model=str(directory), kv_cache_dtype="fp8", kv_cache_memory="2MiB")).model
    assert float(default.model.layers[0].self_attn.attn.k_scale) == 1.0

    with_scales = tmp_path / "scaled"
    with_scales.mkdir()
    for path in directory.iterdir():
        (with_scales / path.name).write_bytes(path.read_bytes())
    tensors = load_file(with_scales / "model.safetensors")
    tensors["model.layers.1.self_attn.k_scale"] = torch.tensor(0.25)
    tensors["model.layers.1.self_attn.v_scale"] = torch.tensor([0.125])
    save_file(tensors, with_scales / "model.safetensors", metadata={"format": "pt"})
    model = engine_of(LLM(model=str(with_scales), kv_cache_dtype="fp8", kv_cache_memory="2MiB")).model
    attention = model.model.layers[1].self_attn.attn
    assert (float(attention.k_scale), float(attention.v_scale)) == (0.25, 0.125)


# Measured 84% (E4M3) and 68% (E5M2, one mantissa bit fewer) on this model; a cache read without its
# scales or written to the wrong slots agrees on next to nothing.
@pytest.mark.parametrize("kv_cache_dtype, min_agreement", [("fp8", 0.7), ("fp8_e5m2", 0.5)])
def test_greedy_agreement_with_the_float32_cache(tiny_model_dir, kv_cache_dtype, min_agreement):
    """Teacher-forced: along the float32 cache's 128 greedy tokens, how often the fp8 cache's most
    likely next token is the same. A loose bound on a tiny random model (small next-token margins);
    the default model's rates are in docs/benchmarks.md."""
    settings = dict(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", kv_cache_memory="4MiB",
                    attention_backend="torch")
    reference = LLM(**settings).generate(
        PROMPTS, SamplingParams(temperature=0.0, max_tokens=128, ignore_eos=True), use_tqdm=False
    )
    sequences = [[*output.prompt_token_ids, *output.outputs[0].token_ids] for output in reference]
    scored = LLM(kv_cache_dtype=kv_cache_dtype, calculate_kv_scales=True, **settings).generate(
        [{"prompt_token_ids": tokens} for tokens in sequences], SamplingParams(max_tokens=1, prompt_logprobs=1),
        use_tqdm=False,
    )
    agreed = total = 0
    for output, tokens, prompt in zip(scored, sequences, reference):
        for position in range(len(prompt.prompt_token_ids), len(tokens)):
            agreed += output.prompt_logprobs[position][tokens[position]].rank == 1
            total += 1
    assert total == len(PROMPTS) * 128
    assert agreed / total >= min_agreement


def test_a_backend_without_fp8_is_refused_and_auto_skips_it(tiny_model_dir, monkeypatch):
    pytest.importorskip("pagedllm_attention_cpu")
    from pagedllm_attention_cpu.backend import CpuAttentionBackend

    monkeypatch.setattr(CpuAttentionBackend, "supported_kv_cache_dtypes", classmethod(lambda cls, dtype: (dtype,)))
    settings = dict(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", kv_cache_dtype="fp8",
                    kv_cache_memory="2MiB")
    refusal = r"'cpu' cannot run.*kv_cache_dtype float8_e4m3fn is not supported.*Backends that can: .*torch"
    with pytest.raises(UnsupportedConfigError, match=refusal):
        LLM(attention_backend="cpu", **settings)
    assert isinstance(engine_of(LLM(**settings)).attention, TorchAttentionBackend)


def test_an_unknown_kv_cache_dtype_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="kv_cache_dtype.*fp8_e5m2"):
        LLM(kv_cache_dtype="int8")

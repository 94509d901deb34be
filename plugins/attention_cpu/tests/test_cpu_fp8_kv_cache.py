"""The cpu backend's FP8 KV cache against the torch reference over the dequantized cache."""

import pytest
import torch

from pagedllm_attention_cpu.backend import CpuAttentionBackend
from pagedllm_core.attention.conformance import check_native_decode
from pagedllm_core.attention.fp8_conformance import compare_fp8_backend, fp8_step
from pagedllm_core.bench.attention import build_random_step

# (rtol, atol) of the output against the reference in the model's dtype: only the order of float32
# operations differs (the key scale is folded into the query, the value scale into the normaliser).
TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (2e-2, 2e-2)}


@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize(
    "seq_lens, query_lens",
    [
        ([37, 200, 16, 5], [1, 1, 1, 1]),  # decode rows: the C++ kernel
        ([40, 9], [40, 9]),  # fresh prompts: their own keys, rounded through fp8
        ([300, 70, 33], [1, 50, 33]),  # decode mixed with a later chunk (gathered blocks)
    ],
)
def test_fp8_cache_matches_reference(cache_dtype, dtype, seq_lens, query_lens):
    step, kv_scales = fp8_step(
        build_random_step(seq_lens, query_lens, num_heads=6, num_kv_heads=2, head_size=64, block_size=16, dtype=dtype),
        cache_dtype,
    )
    result = compare_fp8_backend(CpuAttentionBackend(step.spec), step, kv_scales)
    assert torch.equal(result.cache, result.expected_cache)
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(result.output, result.expected_output, rtol=rtol, atol=atol)


def test_declares_fp8():
    assert torch.float8_e4m3fn in CpuAttentionBackend.supported_kv_cache_dtypes(torch.float32)
    assert torch.float8_e5m2 in CpuAttentionBackend.supported_kv_cache_dtypes(torch.bfloat16)


@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_every_fp8_byte_reads_as_its_value(cache_dtype):
    """One cached token: the output is its value row times v_scale, so each of the 256 byte patterns (NaNs,
    subnormals, both zeros) must widen to exactly torch's float of it."""
    from pagedllm_attention_cpu.kernels import load_kernels

    head_size = 256
    keys = torch.zeros(1, 16, 1, head_size, dtype=cache_dtype)
    values = torch.arange(256, dtype=torch.uint8).view(cache_dtype).reshape(1, 1, 1, head_size).repeat(1, 16, 1, 1)
    query = torch.randn(1, 1, head_size)
    output = torch.zeros(1, 1, head_size)
    v_scale = 0.75  # a scale the kernel must apply after the rows' own factor
    load_kernels().paged_decode(
        output, query, keys, values, torch.tensor([0]), torch.zeros(1, 1, dtype=torch.int32),
        torch.tensor([1], dtype=torch.int32), 0.125, 1.0, v_scale,
    )
    expected = values[0, 0, 0].float() * v_scale
    assert torch.equal(output[0, 0].isnan(), expected.isnan())
    assert torch.equal(output[0, 0].nan_to_num(), expected.nan_to_num())


@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fp8_cache_write_takes_strided_slices_and_stores_the_reference_s_bytes(cache_dtype, dtype):
    from pagedllm_attention_cpu.backend import write_kv_cache
    from pagedllm_core.attention import reference

    step = build_random_step([9, 30], [9, 2], num_heads=4, num_kv_heads=2, head_size=64, block_size=16, dtype=dtype)
    fused = torch.cat([step.key, step.value], dim=-1) * 40  # some values beyond E4M3's 448 after scaling
    kv_cache = torch.zeros(step.kv_cache.shape, dtype=cache_dtype)
    expected = kv_cache.clone()
    scales = (torch.tensor(0.25), torch.tensor(0.5))
    write_kv_cache(fused[..., :64], fused[..., 64:], kv_cache, step.metadata.slot_mapping, scales)
    reference.write_kv_cache(fused[..., :64], fused[..., 64:], expected, step.metadata.slot_mapping, scales)
    assert torch.equal(kv_cache.view(torch.uint8), expected.view(torch.uint8))


@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_the_native_decode_operator_reads_and_writes_the_fp8_cache_as_forward_does(cache_dtype):
    step, kv_scales = fp8_step(
        build_random_step([37, 200, 16], [1, 1, 1], num_heads=6, num_kv_heads=2, head_size=64, block_size=16,
                          dtype=torch.float32),
        cache_dtype,
    )
    check_native_decode(CpuAttentionBackend(step.spec), step, kv_scales)

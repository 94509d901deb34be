"""The W8A8 product against float references of the same int8 weights."""

import os
import subprocess
import sys

import pytest
import torch

from pagedllm_quant_int8.kernel import int8_linear, pack_weight, quantize_per_channel, quantize_per_token


@pytest.mark.parametrize("num_rows", [1, 3, 16, 17, 64, 256])
@pytest.mark.parametrize("in_features, out_features", [(64, 48), (576, 960), (100, 7)])
def test_matches_the_dequantized_reference(num_rows, in_features, out_features):
    generator = torch.Generator().manual_seed(num_rows)
    rows = torch.randn(num_rows, in_features, generator=generator)
    weight, weight_scale = quantize_per_channel(torch.randn(out_features, in_features, generator=generator))
    bias = torch.randn(out_features, generator=generator)
    output = int8_linear(rows, pack_weight(weight), weight_scale, bias)
    dequantized_weight = weight.float() * weight_scale[:, None]

    # Exact arithmetic on the quantized activations: only float32 rounding of the scaling differs.
    quantized, scales = quantize_per_token(rows)
    expected = (quantized.float() * scales) @ dequantized_weight.T + bias
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-4)

    # Against float activations the per-token rounding (half a step of amax / 127 per element) is
    # all that differs: the relative error of the whole output stays under 1%.
    reference = torch.nn.functional.linear(rows, dequantized_weight, bias)
    assert (output - reference).norm() / reference.norm() < 1e-2


def test_matches_the_reference_with_onednns_kernels_for_cpus_without_vnni():
    # Those kernels add pairs of u8 x s8 products in int16 with saturation (vpmaddubsw). ONEDNN_MAX_CPU_ISA=AVX2
    # selects them on any x86 CPU, in a fresh process since oneDNN reads it once.
    environment = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    probe = "from pagedllm_quant_int8.kernel import load_kernels; print(load_kernels().product_saturates())"
    saturates = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True)
    assert saturates.stdout.strip() == "True"
    reference_tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
         "test_matches_the_dequantized_reference"],
        env=environment, capture_output=True, text=True,
    )
    assert reference_tests.returncode == 0, reference_tests.stdout[-4000:]


def test_keeps_the_rows_dtype():
    weight, weight_scale = quantize_per_channel(torch.randn(32, 64))
    rows = torch.randn(5, 64, dtype=torch.bfloat16)
    assert int8_linear(rows, pack_weight(weight), weight_scale, None).dtype == torch.bfloat16


def test_weight_rounding_is_within_half_a_step():
    weight = torch.randn(40, 64)
    quantized, scales = quantize_per_channel(weight)
    assert quantized.dtype == torch.int8 and int(quantized.abs().max()) == 127
    assert bool(((quantized.float() * scales[:, None] - weight).abs() <= scales[:, None] / 2 + 1e-7).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("row_length", [200, 203, 5])  # whole vectors, a tail, a tail only
def test_the_cpp_quantizer_equals_the_torch_one(dtype, row_length):
    from pagedllm_quant_int8.kernel import ACTIVATION_ZERO_POINT, load_kernels

    rows = (torch.randn(70, row_length) * torch.logspace(-3, 3, 70)[:, None]).to(dtype)
    rows[3] = 0.0
    shifted, scales = load_kernels().quantize_rows(rows.contiguous())
    quantized, expected_scales = quantize_per_token(rows)
    assert torch.equal(scales, expected_scales)
    assert torch.equal(shifted.to(torch.int16) - ACTIVATION_ZERO_POINT, quantized.to(torch.int16))

    # Split for a product that saturates in int16: two rows of at most 128 each, zero point 64, summing to the row.
    halves, split_scales = load_kernels().quantize_rows(rows.contiguous(), split=True)
    high, low = halves.to(torch.int16).chunk(2)
    assert torch.equal(split_scales, expected_scales) and int(halves.max()) <= 128
    assert torch.equal(high + low - 2 * 64, quantized.to(torch.int16))

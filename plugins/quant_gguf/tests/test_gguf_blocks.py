import gguf
import numpy as np
import pytest
import torch

from k_quantizer import quantize_k
from pagedllm_quant_gguf.blocks import (
    BLOCK_FORMATS,
    Q4_0,
    Q4_1,
    Q4_K,
    Q5_0,
    Q5_1,
    Q5_K,
    Q6_K,
    Q8_0,
    SUPPORTED_QUANT_TYPES,
    dequantize,
)
from pagedllm_quant_gguf.kernels import load_kernels
from pagedllm_quant_gguf.testing import random_blocks

K_QUANTS = (Q4_K, Q5_K, Q6_K)


def gguf_dequantize(blocks: torch.Tensor, quant_type: int) -> torch.Tensor:
    """gguf-py's float32 weights: the kernels' oracle."""
    return torch.from_numpy(gguf.quants.dequantize(blocks.numpy(), gguf.GGMLQuantizationType(quant_type)))


@pytest.mark.parametrize("quant_type", SUPPORTED_QUANT_TYPES)
@pytest.mark.parametrize("out_features, num_blocks", [(1, 1), (7, 2), (64, 18), (33, 6)])
def test_dequantize_is_bit_identical_to_gguf(quant_type, out_features, num_blocks):
    blocks = random_blocks(out_features, num_blocks, quant_type)
    in_features = num_blocks * BLOCK_FORMATS[quant_type].values_per_block

    expected = gguf_dequantize(blocks, quant_type)
    for actual in (dequantize(blocks, quant_type, in_features),
                   load_kernels().gguf_dequantize(blocks, quant_type, in_features)):  # torch, then C++
        assert actual.dtype == torch.float32 and actual.shape == (out_features, in_features)
        assert torch.equal(actual.view(torch.int32), expected.view(torch.int32))


@pytest.mark.parametrize("quant_type", [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0])
def test_dequantize_is_bit_identical_on_gguf_quantized_weights(quant_type):
    # gguf-py can write these formats: its own blocks of real-looking weights, not only random bytes.
    rng = np.random.default_rng(1)
    weights = (rng.standard_normal((33, 576)) * rng.uniform(0.01, 2.0, size=(33, 1))).astype(np.float32)
    blocks = gguf.quants.quantize(weights, gguf.GGMLQuantizationType(quant_type))
    expected = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(quant_type))
    assert np.array_equal(dequantize(torch.from_numpy(blocks), quant_type, 576).numpy(), expected)


@pytest.mark.parametrize("quant_type", K_QUANTS)
def test_k_quantizer_round_trips_through_gguf(quant_type):
    # The test helper that writes K-quant files: its blocks, read by gguf-py, give back the weights
    # within the format's precision (a wrong layout would be off by the weights' own size).
    rng = np.random.default_rng(2)
    weights = (rng.standard_normal((64, 1536)) * rng.uniform(0.01, 2.0, size=(64, 1))).astype(np.float32)
    blocks = quantize_k(weights, gguf.GGMLQuantizationType(quant_type))
    assert blocks.shape == gguf.quant_shape_to_byte_shape(weights.shape, gguf.GGMLQuantizationType(quant_type))
    restored = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(quant_type))
    relative_rms_error = np.sqrt(((restored - weights) ** 2).sum(axis=1) / (weights**2).sum(axis=1))
    assert relative_rms_error.max() < {Q4_K: 0.12, Q5_K: 0.06, Q6_K: 0.03}[quant_type]


@pytest.mark.parametrize("quant_type", SUPPORTED_QUANT_TYPES)
@pytest.mark.parametrize(
    "M, num_blocks, N",
    [
        (1, 1, 1),
        (1, 18, 577),  # one row of x: registers only; N not a multiple of the thread grain
        (2, 6, 64),
        (3, 6, 64),  # a partial tile
        (4, 18, 7),  # a full tile
        (5, 1, 577),  # more rows than a tile: weight rows decoded together, the last tile of them partial
        (7, 6, 33),
        (16, 6, 64),
        (32, 2, 96),
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_matches_dequantized_matmul(quant_type, M, num_blocks, N, with_bias):
    K = num_blocks * BLOCK_FORMATS[quant_type].values_per_block
    blocks = random_blocks(N, num_blocks, quant_type, seed=M + K + N)
    generator = torch.Generator().manual_seed(M * K * N)
    x = torch.randn(M, K, generator=generator)
    bias = torch.randn(N, generator=generator) if with_bias else None

    weights = gguf_dequantize(blocks, quant_type)
    actual = load_kernels().gguf_linear(x, blocks, quant_type, bias)
    expected = torch.nn.functional.linear(x, weights, bias)
    # Reordering a float32 sum moves it by a few ulps of sum |x * w|, not of the result (which
    # cancellation can make tiny), so the error is measured against the former; seen: below 1e-7.
    term_magnitude = torch.nn.functional.linear(x.abs(), weights.abs(), None if bias is None else bias.abs())
    relative_error = (actual - expected).abs() / term_magnitude
    assert actual.shape == (M, N) and relative_error.max() < 1e-6, f"max relative error {relative_error.max():.2e}"


@pytest.mark.parametrize("quant_type", SUPPORTED_QUANT_TYPES)
@pytest.mark.parametrize("M", [1, 4, 32])
def test_kernel_decodes_weights_bit_identically(quant_type, M):
    # One-hot rows of x pick single weights out exactly (1 * w, plus zeros), so any difference in how
    # a weight is decoded, such as a rounding step an FMA skips, shows up as an inequality. (Compared as
    # floats: a sum that starts at +0 turns a -0 weight, which Q6_K has, into +0.)
    K, N = 2 * BLOCK_FORMATS[quant_type].values_per_block, 37
    blocks = random_blocks(N, 2, quant_type)
    identity = torch.eye(K)
    picked = torch.cat([load_kernels().gguf_linear(identity[i : i + M], blocks, quant_type) for i in range(0, K, M)])
    assert torch.equal(picked, gguf_dequantize(blocks, quant_type).T)


def rounded_to_int8(x: torch.Tensor) -> torch.Tensor:
    """x as the kernel's int8 path multiplies it: each group of 32 values scaled so that its largest size
    is 127, rounded to integers (ties to even), and scaled back."""
    groups = x.reshape(x.shape[0], -1, 32)
    largest = groups.abs().amax(dim=-1, keepdim=True)
    inverse = torch.where(largest > 0, torch.tensor(127.0) / largest, torch.zeros(()))
    return (torch.round(groups * inverse) * (largest / 127)).reshape(x.shape)


@pytest.mark.parametrize("quant_type", SUPPORTED_QUANT_TYPES)
@pytest.mark.parametrize("M, num_blocks, N", [(1, 1, 1), (1, 18, 577), (2, 3, 64), (3, 6, 64), (5, 1, 33), (16, 6, 64), (32, 2, 40)])
def test_int8_activations_multiply_x_rounded_to_int8(quant_type, M, num_blocks, N):
    K = num_blocks * BLOCK_FORMATS[quant_type].values_per_block
    blocks = random_blocks(N, num_blocks, quant_type, seed=M + K + N)
    generator = torch.Generator().manual_seed(M * K * N)
    x = torch.randn(M, K, generator=generator) * torch.rand(M, 1, generator=generator) * 4
    bias = torch.randn(N, generator=generator)
    weights = gguf_dequantize(blocks, quant_type).double()

    actual = load_kernels().gguf_linear(x, blocks, quant_type, bias, int8_activations=True).double()
    term_magnitude = torch.nn.functional.linear(x.abs().double(), weights.abs(), bias.abs().double())
    # Integer products are exact; what is left is float32 rounding of the per-group scaling and sums
    # (seen: below 2e-7 of the terms' magnitude).
    expected = torch.nn.functional.linear(rounded_to_int8(x).double(), weights, bias.double())
    assert ((actual - expected).abs() / term_magnitude).max() < 1e-6
    # Against the float32 x: the rounding of x, at most 1/254 of each group's largest value (seen: below 5e-3).
    exact = torch.nn.functional.linear(x.double(), weights, bias.double())
    assert ((actual - exact).abs() / term_magnitude).max() < 2e-2


def test_int8_activations_of_zeros_and_of_the_largest_quants():
    # An all-zero group has no scale (its products are 0, the bias is kept); Q8_0's -128 weights with x
    # at +-127 are the largest integer products, where maddubs would saturate if anything did.
    blocks = random_blocks(4, 2, Q8_0)
    blocks.view(4, 2, 34)[:, :, 2:] = torch.tensor(-128, dtype=torch.int8).view(torch.uint8)
    bias = torch.arange(4.0)
    x = torch.zeros(3, 64)
    x[1] = 1.0
    x[2, ::2], x[2, 1::2] = -3.0, 3.0
    actual = load_kernels().gguf_linear(x, blocks, Q8_0, bias, int8_activations=True)
    expected = torch.nn.functional.linear(x, gguf_dequantize(blocks, Q8_0), bias)
    assert torch.equal(actual[0], bias)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("int8_activations", [False, True])
def test_kernel_takes_leading_dimensions_and_strided_rows(int8_activations):
    blocks = random_blocks(24, 2, Q4_1)
    x = torch.randn(2, 3, 64)
    strided = torch.randn(5, 128)[:, ::2]  # rows whose values are not contiguous
    gguf_linear = load_kernels().gguf_linear
    batched = gguf_linear(x, blocks, Q4_1, None, int8_activations)
    assert batched.shape == (2, 3, 24)
    assert torch.equal(batched, gguf_linear(x.reshape(6, 64), blocks, Q4_1, None, int8_activations).view(2, 3, 24))
    assert torch.equal(gguf_linear(strided, blocks, Q4_1, None, int8_activations),
                       gguf_linear(strided.contiguous(), blocks, Q4_1, None, int8_activations))


def test_kernel_rejects_bad_arguments():
    gguf_linear = load_kernels().gguf_linear
    blocks = random_blocks(8, 2, Q4_1)
    x = torch.randn(2, 64)
    with pytest.raises(RuntimeError, match="multiple of 32 for Q4_1"):
        gguf_linear(torch.randn(2, 48), blocks, Q4_1, None)
    with pytest.raises(RuntimeError, match="rows must be 40 bytes"):
        gguf_linear(x, blocks[:, :36].contiguous(), Q4_1, None)
    with pytest.raises(RuntimeError, match="unsupported ggml quant type 99"):
        gguf_linear(x, blocks, 99, None)
    with pytest.raises(RuntimeError, match="x must be float32"):
        gguf_linear(x.double(), blocks, Q4_1, None)
    with pytest.raises(RuntimeError, match=r"bias must have shape \[N\]"):
        gguf_linear(x, blocks, Q4_1, torch.zeros(7))


@pytest.mark.parametrize("quant_type", K_QUANTS)
def test_kernel_rejects_bad_k_quant_arguments(quant_type):
    gguf_linear = load_kernels().gguf_linear
    fmt = BLOCK_FORMATS[quant_type]
    blocks = random_blocks(8, 2, quant_type)
    with pytest.raises(RuntimeError, match=f"multiple of 256 for {fmt.name}"):
        gguf_linear(torch.randn(2, 576), blocks, quant_type, None)  # a multiple of 32 but not of 256
    with pytest.raises(RuntimeError, match=f"rows must be {2 * fmt.bytes_per_block} bytes"):
        gguf_linear(torch.randn(2, 512), blocks[:, :-2].contiguous(), quant_type, None)
    with pytest.raises(RuntimeError, match=f"rows must be {fmt.bytes_per_block} bytes"):
        gguf_linear(torch.randn(2, 256), blocks, quant_type, None)


def test_dequantize_rejects_bad_arguments():
    blocks = random_blocks(8, 2, Q4_0)
    with pytest.raises(ValueError, match="unsupported ggml quant type 99"):
        dequantize(blocks, 99, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        dequantize(blocks, Q4_0, 48)
    with pytest.raises(ValueError, match="rows are 36 bytes"):
        dequantize(blocks, Q4_0, 96)
    with pytest.raises(ValueError, match="uint8"):
        dequantize(blocks.to(torch.int16), Q4_0, 64)
    with pytest.raises(ValueError, match="multiple of 256 for Q6_K"):
        dequantize(random_blocks(8, 2, Q6_K), Q6_K, 288)


def test_block_formats_match_gguf():
    for quant_type, fmt in BLOCK_FORMATS.items():
        ggml_type = gguf.GGMLQuantizationType(quant_type)
        assert ggml_type.name == fmt.name
        assert gguf.GGML_QUANT_SIZES[ggml_type] == (fmt.values_per_block, fmt.bytes_per_block)


def test_the_layer_operator_multiplies_from_the_blocks_up_to_max_block_rows_and_densely_past_them():
    kernels = load_kernels()
    blocks, bias = random_blocks(24, 2, Q4_1), torch.randn(24)
    x = torch.randn(5, 64)
    linear = getattr(torch.ops, kernels.__name__).linear  # what the decoder program calls (TORCH_LIBRARY)
    from_blocks = kernels.gguf_linear(x, blocks, Q4_1, bias)
    dense = torch.nn.functional.linear(x, kernels.gguf_dequantize(blocks, Q4_1, 64), bias)
    for max_block_rows in (None, 5):
        assert torch.equal(linear(x, blocks, Q4_1, bias, False, max_block_rows), from_blocks)
        assert torch.equal(kernels.linear(x, blocks, Q4_1, bias, False, max_block_rows), from_blocks)
    assert torch.equal(linear(x, blocks, Q4_1, bias, False, 4), dense)
    assert not torch.equal(from_blocks, dense)  # the two paths sum in different orders

import gguf
import numpy as np
import pytest
import torch

from pagedllm_quant_gguf.blocks import BLOCK_FORMATS, SUPPORTED_QUANT_TYPES, dequantize
from pagedllm_quant_gguf.kernels import load_kernels


def random_blocks(out_features: int, in_features: int, quant_type: int, seed: int = 0) -> torch.Tensor:
    """gguf-py's quantization of random weights whose rows differ in scale, as in real checkpoints."""
    rng = np.random.default_rng(seed)
    row_scales = rng.uniform(0.01, 2.0, size=(out_features, 1))
    weights = (rng.standard_normal((out_features, in_features)) * row_scales).astype(np.float32)
    return torch.from_numpy(gguf.quants.quantize(weights, gguf.GGMLQuantizationType(quant_type)))


@pytest.mark.parametrize("quant_type", SUPPORTED_QUANT_TYPES)
@pytest.mark.parametrize("out_features, in_features", [(1, 32), (7, 64), (64, 576), (33, 1536)])
def test_dequantize_is_bit_identical_to_gguf(quant_type, out_features, in_features):
    blocks = random_blocks(out_features, in_features, quant_type)
    fmt = BLOCK_FORMATS[quant_type]
    assert blocks.shape == (out_features, in_features // fmt.values_per_block * fmt.bytes_per_block)

    expected = gguf.quants.dequantize(blocks.numpy(), gguf.GGMLQuantizationType(quant_type))
    actual = dequantize(blocks, quant_type, in_features)
    assert actual.dtype == torch.float32 and actual.shape == (out_features, in_features)
    assert np.array_equal(actual.numpy().view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("quant_type", SUPPORTED_QUANT_TYPES)
@pytest.mark.parametrize(
    "M, K, N",
    [
        (1, 32, 1),
        (1, 576, 577),  # one row of x: registers only; N not a multiple of the thread grain
        (3, 1536, 64),  # a partial tile
        (4, 576, 7),  # a full tile
        (5, 32, 577),  # more rows than a tile: decoded row reused from the buffer
        (16, 1536, 64),
        (16, 576, 7),
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_matches_dequantized_matmul(quant_type, M, K, N, with_bias):
    blocks = random_blocks(N, K, quant_type, seed=M + K + N)
    generator = torch.Generator().manual_seed(M * K * N)
    x = torch.randn(M, K, generator=generator)
    bias = torch.randn(N, generator=generator) if with_bias else None

    weights = dequantize(blocks, quant_type, K)
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
    # a weight is decoded, such as an FMA fused into Q4_1's d * q + m, shows up as an inequality.
    K, N = 64, 37
    blocks = random_blocks(N, K, quant_type)
    identity = torch.eye(K)
    picked = torch.cat([load_kernels().gguf_linear(identity[i : i + M], blocks, quant_type) for i in range(0, K, M)])
    assert torch.equal(picked, dequantize(blocks, quant_type, K).T)


def test_kernel_rejects_bad_arguments():
    gguf_linear = load_kernels().gguf_linear
    blocks = random_blocks(8, 64, quant_type=3)
    x = torch.randn(2, 64)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        gguf_linear(torch.randn(2, 48), blocks, 3, None)
    with pytest.raises(RuntimeError, match="rows must be 40 bytes"):
        gguf_linear(x, blocks[:, :36].contiguous(), 3, None)
    with pytest.raises(RuntimeError, match="unsupported ggml quant type 99"):
        gguf_linear(x, blocks, 99, None)
    with pytest.raises(RuntimeError, match="x must be float32"):
        gguf_linear(x.double(), blocks, 3, None)
    with pytest.raises(RuntimeError, match=r"bias must have shape \[N\]"):
        gguf_linear(x, blocks, 3, torch.zeros(7))


def test_dequantize_rejects_bad_arguments():
    blocks = random_blocks(8, 64, quant_type=2)
    with pytest.raises(ValueError, match="unsupported ggml quant type 99"):
        dequantize(blocks, 99, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        dequantize(blocks, 2, 48)
    with pytest.raises(ValueError, match="rows are 36 bytes"):
        dequantize(blocks, 2, 96)
    with pytest.raises(ValueError, match="uint8"):
        dequantize(blocks.to(torch.int16), 2, 64)

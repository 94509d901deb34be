"""The C++ kernel against the torch reference (dequantize the checkpoint layout, then matmul in float64).

Tolerance: the kernel accumulates ``s * sum(x * q) - s * z * sum(x)`` per group in float32, so its error is
float32 rounding of sums whose terms are bounded by ``|x| @ ((q + z) * s)``; it is checked against
``1e-5 * (|x| @ |W_abs|)`` with ``W_abs = (q + z) * s``, a few float32 epsilons per term's magnitude.
"""

import pytest
import torch

from pagedllm_quant_awq.kernels import load_kernels, to_kernel_layout
from pagedllm_quant_awq.packing import dequantize, pack_int4, unpack_int4
from pagedllm_quant_awq.testing import random_awq_weights


@pytest.fixture(scope="module")
def kernels():
    return load_kernels()


def magnitude_bound(x, qweight, qzeros, scales, group_size):
    """``|x| @ ((q + z) * s)`` in float64: the scale of the terms the kernel sums."""
    quants = unpack_int4(qweight).double()
    zeros = unpack_int4(qzeros).double().repeat_interleave(group_size, dim=0)
    weights_abs = (quants + zeros) * scales.double().repeat_interleave(group_size, dim=0)
    return x.double().abs() @ weights_abs


def test_pack_and_unpack_are_inverse_and_follow_awq_order():
    values = torch.arange(16).repeat(3, 1)[:, :16]
    packed = pack_int4(values)
    assert packed.shape == (3, 2) and packed.dtype == torch.int32
    assert torch.equal(unpack_int4(packed).long(), values)
    # Nibble i of a word holds column AWQ_ORDER[i]: columns 0, 2, 4, 6, 1, 3, 5, 7 from the low bits up.
    assert int(packed[0, 0]) & 0xFFFFFFFF == 0x75316420


@pytest.mark.parametrize("num_rows", [1, 2, 3, 4, 5, 8, 16, 17, 64, 256])
@pytest.mark.parametrize("in_features,out_features,group_size", [(256, 192, 128), (576, 960, 64), (128, 40, 32)])
def test_awq_linear_equals_dequantize_then_matmul(kernels, num_rows, in_features, out_features, group_size):
    qweight, qzeros, scales = random_awq_weights(in_features, out_features, group_size, seed=num_rows)
    x = torch.randn(num_rows, in_features, generator=torch.Generator().manual_seed(1))
    bias = torch.randn(out_features)
    layout = to_kernel_layout(kernels, qweight, qzeros, scales)

    output = kernels.awq_linear(x, *layout, group_size, out_features, bias)

    expected = x.double() @ dequantize(qweight, qzeros, scales, group_size).double() + bias.double()
    bound = 1e-5 * magnitude_bound(x, qweight, qzeros, scales, group_size) + 1e-6
    assert output.shape == (num_rows, out_features)
    assert ((output.double() - expected).abs() <= bound).all()


def test_awq_dequantize_is_exact(kernels):
    qweight, qzeros, scales = random_awq_weights(256, 200, 64)
    layout = to_kernel_layout(kernels, qweight, qzeros, scales)
    # (q - z) is an exact small integer and s a float16, so their float32 product is exact.
    assert torch.equal(kernels.awq_dequantize(*layout, 64, 200), dequantize(qweight, qzeros, scales, 64))


def test_bad_shapes_are_refused_with_what_was_expected(kernels):
    qweight, qzeros, scales = random_awq_weights(128, 64, 64)
    layout = to_kernel_layout(kernels, qweight, qzeros, scales)
    with pytest.raises(RuntimeError, match="in_features"):
        kernels.awq_linear(torch.randn(2, 100), *layout, 64, 64, None)
    with pytest.raises(RuntimeError, match="float32"):
        kernels.awq_linear(torch.randn(2, 128, dtype=torch.float64), *layout, 64, 64, None)

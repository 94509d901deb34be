"""The Triton kernel against the torch reference, in Triton's interpreter (TRITON_INTERPRET=1, set by conftest
without a GPU). float32 multiplies in full precision (tolerance as the C++ kernel's, a few float32 epsilons of
the terms' magnitude); float16 rounds each dequantized weight and the inputs to float16 (1e-2 relative)."""

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_quant_awq.packing import dequantize  # noqa: E402
from pagedllm_quant_awq.testing import random_awq_weights  # noqa: E402
from pagedllm_quant_awq.triton_gemm import awq_gemm  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("num_rows", [1, 3, 16, 33, 256])
@pytest.mark.parametrize("in_features,out_features,group_size", [(128, 192, 64), (96, 40, 32)])
def test_awq_gemm_equals_dequantize_then_matmul_float32(num_rows, in_features, out_features, group_size):
    qweight, qzeros, scales = random_awq_weights(in_features, out_features, group_size, seed=num_rows)
    x = torch.randn(num_rows, in_features, generator=torch.Generator().manual_seed(2))
    bias = torch.randn(out_features)
    weight = dequantize(qweight, qzeros, scales, group_size).double()

    output = awq_gemm(*(t.to(DEVICE) for t in (x, qweight, qzeros, scales)), group_size, bias.to(DEVICE)).cpu()

    expected = x.double() @ weight + bias.double()
    bound = 1e-5 * (x.double().abs() @ weight.abs()) + 1e-5
    assert ((output.double() - expected).abs() <= bound).all()


def test_awq_gemm_float16():
    qweight, qzeros, scales = random_awq_weights(128, 64, 64, seed=5)
    x = torch.randn(8, 128, generator=torch.Generator().manual_seed(3)).half()
    output = awq_gemm(*(t.to(DEVICE) for t in (x, qweight, qzeros, scales)), 64).cpu()
    assert output.dtype == torch.float16
    expected = x.double() @ dequantize(qweight, qzeros, scales, 64).double()
    torch.testing.assert_close(output.double(), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the tests above compile the kernel anyway")
def test_the_kernel_compiles_for_hopper_without_a_gpu():
    import os
    import subprocess
    import sys
    from pathlib import Path

    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_for_hopper.py")
    result = subprocess.run([sys.executable, str(script)], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("compiled") == 3

"""The C++ RMSNorm equals torch's ``rms_norm`` up to the order of the sum of squares."""

import pytest
import torch
import torch.nn.functional as F

from pagedllm_core.model.layers.norm import RMSNorm


@pytest.mark.parametrize("num_rows", [0, 1, 7, 300])
@pytest.mark.parametrize("hidden_size", [64, 576, 1000])
def test_kernel_matches_torch_rms_norm(kernels, num_rows, hidden_size):
    generator = torch.Generator().manual_seed(num_rows + hidden_size)
    rows = torch.randn(num_rows, hidden_size, generator=generator) * 4
    weight = torch.randn(hidden_size, generator=generator)
    expected = F.rms_norm(rows, weight.shape, weight, 1e-6)
    torch.testing.assert_close(kernels.rms_norm(rows, weight, 1e-6), expected, rtol=2e-6, atol=1e-6)
    # A strided view is read as the rows it shows.
    wide = torch.randn(num_rows, 2 * hidden_size, generator=generator)
    torch.testing.assert_close(
        kernels.rms_norm(wide[:, ::2], weight, 1e-6), F.rms_norm(wide[:, ::2], weight.shape, weight, 1e-6),
        rtol=2e-6, atol=1e-6,
    )


def test_module_uses_torch_under_autograd_and_the_kernel_in_inference(kernels):
    norm = RMSNorm(32, 1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 32))
    rows = torch.randn(3, 32, requires_grad=True)
    norm(rows).sum().backward()  # autograd path: torch's rms_norm, differentiable
    assert rows.grad is not None
    with torch.inference_mode():
        torch.testing.assert_close(norm(rows.detach()), F.rms_norm(rows.detach(), (32,), norm.weight, 1e-5))

"""The rotary embedding's four-kernel form, and its C++ kernel for float32 CPU rows outside autograd, round
exactly like the textbook rotate-half formula."""

import pytest
import torch

from pagedllm_core.model.layers.rotary import RotaryEmbedding

HEAD_SIZE = 64


def rotate_half_reference(rotary, heads, positions, dtype):
    cos = rotary.cos[positions].to(dtype)[:, None, :]
    sin = rotary.sin[positions].to(dtype)[:, None, :]
    first, second = heads.unflatten(-1, (-1, HEAD_SIZE)).chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1).flatten(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_tokens", [1, 9, 128])
@pytest.mark.parametrize("grad", [True, False])  # float32 without autograd: the C++ kernel
def test_rotation_is_bit_identical_to_the_reference(dtype, num_tokens, grad):
    rotary = RotaryEmbedding(HEAD_SIZE, 2048, {"rope_type": "default", "rope_theta": 10000.0})
    generator = torch.Generator().manual_seed(num_tokens)
    positions = torch.randint(0, 2048, (num_tokens,), generator=generator)
    fused = torch.randn(num_tokens, 15 * HEAD_SIZE, generator=generator).to(dtype)
    heads = fused[:, : 12 * HEAD_SIZE]  # queries and keys as a strided view of a fused projection
    with torch.set_grad_enabled(grad):
        rotated = rotary.rotate_heads(heads, *rotary.embed(positions, dtype))
    assert rotated.is_contiguous()
    assert torch.equal(rotated, rotate_half_reference(rotary, heads, positions, dtype))

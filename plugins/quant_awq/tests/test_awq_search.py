"""The AWQ search's parts: group quantization, folding scales in exactly, and why the search helps."""

import torch
from torch import nn

from pagedllm_quant_awq.scale_search import (
    ScaleGroup,
    apply_scales,
    dequantize_weight,
    fake_quantize,
    quantize_weight,
    search_clip,
    search_scales,
)


def test_group_quantization_rounds_to_nearest_within_half_a_step():
    weight = torch.randn(48, 128, generator=torch.Generator().manual_seed(0))
    quantized = quantize_weight(weight, 32)
    assert quantized.quants.max() <= 15 and quantized.zeros.max() <= 15
    assert quantized.scales.shape == (48, 4) and quantized.scales.dtype == torch.float16
    step = quantized.scales.float().repeat_interleave(32, dim=1)
    # Each group's range spans 15 steps, zero rounded to a step: every weight within half a step (plus the
    # float16 rounding of the scale, under 0.1% of the range).
    assert ((dequantize_weight(quantized, 32) - weight).abs() <= 0.5 * step + 1e-3 * 15 * step).all()


class Normed(nn.Module):
    """An RMSNorm-like producer feeding two linear layers whose concatenated output is the block's output."""

    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.first, self.second = nn.Linear(hidden, out, bias=False), nn.Linear(hidden, out, bias=False)

    def forward(self, x):
        return torch.cat([self.first(x), self.second(x)], dim=-1)


def outlier_inputs(tokens: int, hidden: int) -> torch.Tensor:
    """Activations with a few channels 30x larger than the rest, as LLM activations have."""
    x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(1))
    x[:, :4] *= 30
    return x


@torch.no_grad()
def test_scales_fold_in_exactly_and_beat_plain_rounding_on_outlier_channels():
    torch.manual_seed(0)
    block = Normed(128, 64)
    x = outlier_inputs(256, 128)
    group = ScaleGroup(block, [block.first, block.second], x, block, {})
    reference = block(x)

    def quantized_error():
        saved = [linear.weight.data.clone() for linear in group.linears]
        for linear in group.linears:
            linear.weight.data = fake_quantize(linear.weight.data, 32)
        error = (block(group.inputs) - reference).pow(2).mean().item()
        for linear, weight in zip(group.linears, saved):
            linear.weight.data = weight
        return error

    plain_error = quantized_error()
    scales = search_scales(group, 32)
    apply_scales(group, scales)
    # The producer's weight (applied to x by the caller, here: group.inputs) is divided by the scales and the
    # linears' columns multiplied by them: the float block is unchanged.
    torch.testing.assert_close(block(group.inputs), reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(block.weight.data, 1 / scales)
    assert quantized_error() < 0.7 * plain_error


@torch.no_grad()
def test_clipping_shrinks_ranges_only_where_it_lowers_the_error():
    linear = nn.Linear(128, 32, bias=False)
    linear.weight.data[:, 5] *= 20  # one outlier weight per row stretches its group's range
    x = torch.randn(300, 128, generator=torch.Generator().manual_seed(2))
    max_value = search_clip(linear, x, 32)
    original_max = linear.weight.reshape(32, 4, 32).abs().amax(-1)
    assert (max_value <= original_max).all() and (max_value >= 0.5 * original_max - 1e-6).all()
    clipped = fake_quantize(linear.weight, 32, max_value)
    plain = fake_quantize(linear.weight, 32)
    reference = x @ linear.weight.T
    assert (x @ clipped.T - reference).pow(2).mean() <= (x @ plain.T - reference).pow(2).mean()

"""Activation-aware weight quantization (Lin et al., 2023, "AWQ"): the per-layer search, on a transformers model.

Decoder layer by decoder layer, on the layer's own calibration inputs:

1. For each set of linear layers that read the same input (q/k/v after the attention norm, o after v when their
   shapes allow, gate/up after the MLP norm, down after up) it searches per-input-channel scales
   ``s = mean|x| ** alpha`` over a grid of ``alpha`` in ``[0, 1)``: each candidate scales the weights' input
   columns by ``s``, quantizes them to 4 bits per group, divides by ``s`` again, and is scored by the mean squared
   error of the block's output (attention, MLP, or the layer itself) against the float output. The best ``s`` is
   folded in exactly: the weights' columns are multiplied by it and the operator before them (a norm's weight, or
   the rows of v/up) divided by it, so the float model is unchanged and only the quantization error moves.
2. Optionally (``clip``) it then searches, per output row and group, how far to shrink the weight's range
   (down to half) before quantizing, scored by the error of that layer's output on a sample of tokens.

The layer's output with the transformed float weights is the next layer's input. Quantizing the transformed
weights (:func:`quantize_weight`) is what the checkpoint then stores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

NUM_GRID = 20
MAX_SHRINK = 0.5
NUM_CLIP_TOKENS = 512
MAX_BITS_VALUE = 15  # 4-bit


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight ``[out, in]`` as 4-bit ``quants`` ``[out, in]`` with per-group float16 ``scales`` and integer
    ``zeros`` ``[out, in / group_size]``: ``W = (quants - zeros) * scales``."""

    quants: torch.Tensor
    zeros: torch.Tensor
    scales: torch.Tensor


def quantize_weight(weight: torch.Tensor, group_size: int, max_value: torch.Tensor | None = None) -> QuantizedWeight:
    """Asymmetric round-to-nearest 4-bit quantization of each group of ``group_size`` input columns.

    :param max_value: optional per-(row, group) clipping ``[out, in / group_size]``: the group's range is clamped
        to ``[-max_value, max_value]`` first.
    """
    out_features, in_features = weight.shape
    groups = weight.float().reshape(out_features, in_features // group_size, group_size)
    if max_value is not None:
        groups = groups.clamp(-max_value.unsqueeze(-1), max_value.unsqueeze(-1))
    high, low = groups.amax(-1), groups.amin(-1)
    # The scales are stored in float16, so the quants are rounded against the float16 value.
    scales = ((high - low).clamp(min=1e-5) / MAX_BITS_VALUE).to(torch.float16).float().clamp(min=6.2e-5)
    zeros = (-torch.round(low / scales)).clamp(0, MAX_BITS_VALUE)
    quants = (torch.round(groups / scales.unsqueeze(-1)) + zeros.unsqueeze(-1)).clamp(0, MAX_BITS_VALUE)
    return QuantizedWeight(
        quants.reshape(out_features, in_features).to(torch.uint8), zeros.to(torch.uint8), scales.to(torch.float16)
    )


def dequantize_weight(quantized: QuantizedWeight, group_size: int) -> torch.Tensor:
    """``(quants - zeros) * scales`` as float32 ``[out, in]``."""
    scales = quantized.scales.float().repeat_interleave(group_size, dim=1)
    zeros = quantized.zeros.float().repeat_interleave(group_size, dim=1)
    return (quantized.quants.float() - zeros) * scales


def fake_quantize(weight: torch.Tensor, group_size: int, max_value: torch.Tensor | None = None) -> torch.Tensor:
    return dequantize_weight(quantize_weight(weight, group_size, max_value), group_size)


@dataclass
class ScaleGroup:
    """Linear layers reading one input, the operator that produces it, and the block scored for them."""

    previous: nn.Module  # an RMSNorm (its weight) or a linear layer (its output rows)
    linears: list[nn.Linear]
    inputs: torch.Tensor  # [tokens, in_features], what the linears read
    block: nn.Module  # whose output the search compares
    block_kwargs: dict


@torch.no_grad()
def search_scales(group: ScaleGroup, group_size: int) -> torch.Tensor:
    """The per-input-channel scales of ``group`` with the least block-output error after 4-bit quantization."""
    x = group.inputs
    reference = _block_output(group, x)
    activation_mean = x.abs().reshape(-1, x.shape[-1]).float().mean(0)
    originals = [linear.weight.data.clone() for linear in group.linears]
    best_error, best_scales = float("inf"), torch.ones_like(activation_mean)
    for step in range(NUM_GRID):
        alpha = step / NUM_GRID
        scales = activation_mean.pow(alpha).clamp(min=1e-4)
        scales = scales / (scales.max() * scales.min()).sqrt()
        for linear, original in zip(group.linears, originals):
            linear.weight.data = (fake_quantize(original * scales, group_size) / scales).to(original.dtype)
        error = (_block_output(group, x) - reference).float().pow(2).mean().item()
        if error < best_error:
            best_error, best_scales = error, scales
    for linear, original in zip(group.linears, originals):
        linear.weight.data = original
    return best_scales


def apply_scales(group: ScaleGroup, scales: torch.Tensor) -> None:
    """Fold ``scales`` into the weights exactly: linears' input columns times ``s``, the producer divided by ``s``."""
    previous = group.previous
    if isinstance(previous, nn.Linear):
        previous.weight.data.div_(scales.unsqueeze(-1).to(previous.weight.dtype))
        if previous.bias is not None:
            previous.bias.data.div_(scales.to(previous.bias.dtype))
    else:
        previous.weight.data.div_(scales.to(previous.weight.dtype))
    for linear in group.linears:
        linear.weight.data.mul_(scales.to(linear.weight.dtype))
    group.inputs = group.inputs / scales


@torch.no_grad()
def search_clip(linear: nn.Linear, inputs: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per (row, group) clipping thresholds ``[out, in / group_size]`` minimising the error of ``x @ W_q.T``."""
    weight = linear.weight.data.float()
    out_features, in_features = weight.shape
    tokens = inputs.reshape(-1, in_features).float()
    tokens = tokens[torch.linspace(0, tokens.shape[0] - 1, min(NUM_CLIP_TOKENS, tokens.shape[0])).long()]
    x_groups = tokens.reshape(-1, in_features // group_size, group_size)  # [tokens, groups, g]
    original_max = weight.reshape(out_features, -1, group_size).abs().amax(-1)  # [out, groups]
    best_max = original_max.clone()
    best_error = torch.full_like(original_max, float("inf"))
    # Per-group outputs [out, groups, tokens]: each group's share of x @ W.T, compared group by group.
    reference = torch.einsum("ogk,tgk->ogt", weight.reshape(out_features, -1, group_size), x_groups)
    for step in range(int(MAX_SHRINK * NUM_GRID)):
        max_value = original_max * (1 - step / NUM_GRID)
        quantized = fake_quantize(weight, group_size, max_value).reshape(out_features, -1, group_size)
        error = (torch.einsum("ogk,tgk->ogt", quantized, x_groups) - reference).pow(2).mean(-1)
        better = error < best_error
        best_error[better], best_max[better] = error[better], max_value[better]
    return best_max


def _block_output(group: ScaleGroup, x: torch.Tensor) -> torch.Tensor:
    output = group.block(x, **group.block_kwargs)
    return output[0] if isinstance(output, tuple) else output

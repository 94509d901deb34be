"""Rotary position embedding (RoPE) with the frequency schemes of Hugging Face configs."""

from __future__ import annotations

import math

import torch
from torch import nn

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.layers import cpu_kernels

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def rope_parameters(hf_config) -> dict:
    """The config's RoPE settings as one dict with ``rope_type`` and ``rope_theta``.

    Newer configs keep everything in ``rope_parameters``; older ones split it between
    ``rope_theta`` and an optional ``rope_scaling`` dict (which used ``type`` for ``rope_type``).
    """
    parameters = dict(getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {})
    parameters.setdefault("rope_type", parameters.pop("type", "default"))
    parameters.setdefault("rope_theta", getattr(hf_config, "rope_theta", None) or 10000.0)
    return parameters


def inverse_frequencies(head_size: int, parameters: dict) -> torch.Tensor:
    """``[head_size // 2]`` float32 angular frequencies, rescaled as ``rope_type`` prescribes."""
    rope_type = parameters["rope_type"]
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelLoadError(f"RoPE type {rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    base = parameters["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))
    if rope_type == "linear":
        return inv_freq / parameters["factor"]
    if rope_type == "llama3":
        return _llama3_frequencies(inv_freq, parameters)
    return inv_freq


def _llama3_frequencies(inv_freq: torch.Tensor, parameters: dict) -> torch.Tensor:
    # Llama 3.1 stretches long wavelengths by `factor`, keeps short ones, and blends in between.
    factor = parameters["factor"]
    low_freq_factor = parameters["low_freq_factor"]
    high_freq_factor = parameters["high_freq_factor"]
    original_context = parameters["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > original_context / low_freq_factor, inv_freq / factor, inv_freq)
    smooth = (original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelength >= original_context / high_freq_factor) & (wavelength <= original_context / low_freq_factor)
    return torch.where(is_medium, blended, scaled)


class RotaryEmbedding(nn.Module):
    """Rotates query and key heads by their token's position, in the "rotate half" layout.

    cos/sin of every position up to ``max_position`` are computed once, in float32, and looked
    up by the step's ``positions``; they are cast to the activations' dtype before use, as
    transformers does, so outputs match it in every dtype.
    """

    def __init__(self, head_size: int, max_position: int, parameters: dict):
        super().__init__()
        self.head_size = head_size
        inv_freq = inverse_frequencies(head_size, parameters)
        # angles: [max_position, head_size // 2]
        angles = torch.arange(max_position, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    @classmethod
    def from_config(cls, hf_config, head_size: int) -> RotaryEmbedding:
        return cls(head_size, hf_config.max_position_embeddings, rope_parameters(hf_config))

    def embed(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`rotate_heads` takes for ``positions``, looked up once per step and shared by every
        layer: ``[cos, cos]`` and ``[-sin, sin]``, each ``[num_tokens, 1, head_size]``."""
        cos, sin = self.cos[positions], self.sin[positions]
        return torch.cat((cos, cos), dim=-1).to(dtype)[:, None, :], torch.cat((-sin, sin), dim=-1).to(dtype)[:, None, :]

    def rotate_heads(self, heads: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate every head of ``heads`` ``[num_tokens, num_heads * head_size]`` (a strided view is fine:
        queries and keys side by side in a fused projection's output are rotated in one pass).

        With halves ``x1, x2`` of a head, ``[x1, x2] * [cos, cos] + [x2, x1] * [-sin, sin]`` is the
        rotation ``[x1 cos - x2 sin, x2 cos + x1 sin]`` with the same roundings (negation is exact),
        in four kernels rather than seven; float32 rows on a CPU, outside autograd, in one C++ call
        (:mod:`~pagedllm_core.model.layers.cpu_kernels`) with the same roundings."""
        kernels = cpu_kernels.kernels_for(heads)
        if kernels is not None:
            return kernels.rotate_heads(heads, cos, sin)
        num_tokens = heads.shape[0]
        heads = heads.unflatten(-1, (-1, self.head_size))  # [num_tokens, num_heads, head_size]
        swapped = heads.roll(self.head_size // 2, dims=-1).mul_(sin)
        return (heads * cos).add_(swapped).view(num_tokens, -1)

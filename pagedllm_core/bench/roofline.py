"""The machine's matmul peak and the model's FLOPs, for the fraction of the roofline a run reaches.

A run's achieved FLOP/s counts only the work the model needs (no padding, no recomputation after
preemption): for every token a sequence feeds through the model, two FLOPs per weight of each
matmul (embedding lookups are not matmuls) plus the attention scores and the weighted sum of values
over its context; the vocabulary projection only for tokens whose logits are sampled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from pagedllm_core.bench.workloads import Workload
from pagedllm_core.model.attention_shape import attention_shape
from pagedllm_core.model.layers.linear import PrepackedLinear
from pagedllm_core.model.quantization import QuantizedLinear


@dataclass(frozen=True)
class MatmulPeak:
    """The FLOP/s a square matmul of ``size`` reached in ``dtype``."""

    dtype: torch.dtype
    size: int
    flops_per_second: float


def measure_matmul_peak(dtype: torch.dtype, max_size: int = 4096, device: torch.device | str = "cpu",
                        min_seconds: float = 0.5) -> MatmulPeak:
    """Time square matmuls, doubling the side from 512 until one takes ``min_seconds`` or the side
    reaches ``max_size``; the best of two calls at the last side counts.

    The early stop matters on CPUs without native bfloat16, where torch emulates it some fifty times
    slower than float32 and a 4096-side matmul would take minutes.
    """
    device = torch.device(device)
    size = min(512, max_size)
    while True:
        seconds = min(_matmul_seconds(size, dtype, device) for _ in range(2))
        if seconds >= min_seconds or size >= max_size:
            return MatmulPeak(dtype, size, 2 * size**3 / seconds)
        size = min(2 * size, max_size)


def _matmul_seconds(size: int, dtype: torch.dtype, device: torch.device) -> float:
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    right = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    torch.matmul(left, right)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


@dataclass(frozen=True)
class ModelFlops:
    """The FLOPs one sequence costs a decoder-only model."""

    num_body_weights: int  # weights of every matmul a token goes through, the vocabulary projection excluded
    num_vocab_weights: int  # weights of the vocabulary projection (lm_head)
    num_layers: int
    num_heads: int
    head_size: int

    @classmethod
    def of_model(cls, model: nn.Module, hf_config) -> ModelFlops:
        """Count the weights of ``model``'s linear layers; its ``lm_head`` is the vocabulary projection."""
        linear_layers = [
            module for module in model.modules() if isinstance(module, (nn.Linear, PrepackedLinear, QuantizedLinear))
        ]
        num_vocab_weights = model.lm_head.in_features * model.lm_head.out_features
        shape = attention_shape(hf_config)
        return cls(
            num_body_weights=sum(layer.in_features * layer.out_features for layer in linear_layers) - num_vocab_weights,
            num_vocab_weights=num_vocab_weights,
            num_layers=shape.num_layers,
            num_heads=shape.num_heads,
            head_size=shape.head_size,
        )

    def sequence_flops(self, num_prompt_tokens: int, num_output_tokens: int) -> int:
        """FLOPs to prefill the prompt and generate ``num_output_tokens`` (the last one is sampled, never fed)."""
        num_fed_tokens = num_prompt_tokens + num_output_tokens - 1
        # The token at position p attends to p + 1 keys: sum over p of (p + 1) key positions.
        num_attended = num_fed_tokens * (num_fed_tokens + 1) // 2
        attention_per_key = 2 * 2 * self.num_layers * self.num_heads * self.head_size  # q.k and p*v
        return (
            2 * self.num_body_weights * num_fed_tokens
            + 2 * self.num_vocab_weights * num_output_tokens
            + attention_per_key * num_attended
        )

    def workload_flops(self, workload: Workload) -> int:
        """FLOPs of every request of the workload generating its ``output_len`` tokens."""
        return sum(self.sequence_flops(len(prompt), workload.output_len) for prompt in workload.prompts)

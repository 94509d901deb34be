"""Which implementation of the batched LoRA op a device runs."""

from __future__ import annotations

import torch

from pagedllm_lora import punica


def torch_op(output, x, lora_a, lora_b, state):
    return punica.add_lora(output, x, lora_a, lora_b, state.slot_mask)


def triton_op(output, x, lora_a, lora_b, state):
    from pagedllm_lora import triton_ops

    return triton_ops.add_lora(output, x, lora_a, lora_b, state.token_slots)


def select_op(device: torch.device):
    """The Triton kernels on CUDA when triton is installed, the torch op otherwise (and on the CPU)."""
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return torch_op
        return triton_op
    return torch_op

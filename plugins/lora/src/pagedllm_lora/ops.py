"""Which implementation of the batched LoRA op a device runs."""

from __future__ import annotations

import torch

from pagedllm_lora import punica


def torch_op(output, x, lora_a, lora_b, output_sizes, state):
    """The CPU's batched op: the one slot in use over every row, else the rows grouped by slot (the state's plan)."""
    if state.one_slot is not None:
        slot = state.one_slot
        return punica.add_lora_one_slot(output, x, lora_a[slot], lora_b[slot], state.row_mask, output_sizes)
    for group in state.groups:
        punica.add_lora_grouped(output, x, lora_a[group.slots], lora_b[group.slots], group.rows, group.row_mask,
                                output_sizes)
    return output


def triton_op(output, x, lora_a, lora_b, output_sizes, state):
    from pagedllm_lora import triton_ops

    return triton_ops.add_lora(output, x, lora_a, lora_b, state.token_slots, output_sizes)


def select_op(device: torch.device):
    """The Triton kernels on CUDA when triton is installed, the torch op otherwise (and on the CPU)."""
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return torch_op
        return triton_op
    return torch_op

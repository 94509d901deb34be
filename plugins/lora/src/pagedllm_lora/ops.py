"""Which implementation of the batched LoRA op a device runs."""

from __future__ import annotations

import torch

from pagedllm_lora import punica


# Up to this many rows per adapter slot in use, gathering each row's A and B costs less than multiplying
# every row by every slot (decode steps of many adapters; docs/lora.md).
MAX_GATHERED_ROWS_PER_SLOT = 2


def torch_op(output, x, lora_a, lora_b, state):
    """The CPU's batched op: masked for one adapter, gathered for few rows per adapter, else segmented."""
    num_active = len(state.active_slots)
    if num_active <= 1:
        return punica.add_lora(output, x, lora_a, lora_b, state.slot_mask)
    if x.shape[0] <= MAX_GATHERED_ROWS_PER_SLOT * num_active:
        return punica.add_lora_gathered(output, x, lora_a, lora_b, state.adapter_rows, state.adapter_row_slots)
    return punica.add_lora_segmented(output, x, lora_a, lora_b, state.rows_by_slot)


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

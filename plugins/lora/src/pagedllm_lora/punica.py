"""The batched LoRA op in plain PyTorch: every row's delta in one pass, each row through its own slot.

Slot tensors hold one adapter per slot, rank padded with zeros to the slot width ``R``:
``lora_a [num_slots, R, in_features]`` and ``lora_b [num_slots, R, out_features]`` (scaling folded in).
A row's slot comes as a one-hot ``slot_mask [num_rows, num_slots]`` (all zeros: the base model).

Three CPU paths, each computing every row's delta with its own adapter:

- :func:`add_lora` (masked): the shrink multiplies every row by the A of all the slots in use at once,
  the mask keeps each row's own slot, and the expand multiplies the masked result by all the B's
  stacked, so the zeros of the other slots add nothing: two matmuls per layer, but arithmetic that
  grows with rows x slots in use. Best with one slot; the Triton kernels' oracle.
- :func:`add_lora_gathered`: each adapter row's own A and B are gathered and multiplied batch-wise:
  arithmetic that grows with the rows only, and a copy of every row's weights; best for few rows per
  adapter (decoding many adapters at once).
- :func:`add_lora_segmented`: one shrink and one expand per slot in use, over that slot's rows: exact
  arithmetic for many rows per adapter (prompts of several adapters in one step).
"""

from __future__ import annotations

import torch


def add_lora(output: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
             slot_mask: torch.Tensor) -> torch.Tensor:
    """``output[t] += (x[t] @ lora_a[s].T) @ lora_b[s]`` for each row ``t`` whose slot ``s`` the mask marks.

    Only the first ``slot_mask.shape[1]`` slots are read (the manager passes the slots in use).
    output: [num_rows, out_features]; x: [num_rows, in_features]; returns ``output``, updated in place.
    """
    num_slots = slot_mask.shape[1]
    _, width, in_features = lora_a.shape
    a = lora_a[:num_slots].reshape(num_slots * width, in_features)
    b = lora_b[:num_slots].reshape(num_slots * width, lora_b.shape[-1])
    shrunk = (x @ a.T).view(-1, num_slots, width) * slot_mask.unsqueeze(-1)
    return output.addmm_(shrunk.view(-1, num_slots * width), b)


def add_lora_gathered(output: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                      rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """:func:`add_lora` for the tokens ``rows`` (those with an adapter) with their ``slots``, each row's A
    and B gathered; returns ``output``, updated in place."""
    if rows.numel():
        shrunk = torch.bmm(lora_a[slots], x[rows].unsqueeze(-1))  # [rows, R, 1]
        output.index_add_(0, rows, torch.bmm(shrunk.transpose(1, 2), lora_b[slots]).squeeze(1))
    return output


def add_lora_segmented(output: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                       rows_by_slot: dict[int, torch.Tensor]) -> torch.Tensor:
    """:func:`add_lora_gathered`'s result with one matmul pair per slot over the tokens it holds."""
    for slot, rows in rows_by_slot.items():
        if rows.numel():
            output.index_add_(0, rows, (x[rows] @ lora_a[slot].T) @ lora_b[slot])
    return output


def add_lora_reference(output: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                       token_slots: torch.Tensor) -> torch.Tensor:
    """The same delta row by row (slot -1: none); for tests of the batched ops only."""
    for row, slot in enumerate(token_slots.tolist()):
        if slot >= 0:
            output[row] += (x[row] @ lora_a[slot].T) @ lora_b[slot]
    return output

"""Which slot each token of a step uses, and how the CPU op batches the tokens: found once per step, read by
every wrapped layer (no per-layer Python work beyond the matmuls)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Grouping several slots' rows into one batch pads every slot to the busiest one's row count (and counts the
# unused slots between the lowest and highest in use). Up to this many batch rows per adapter row the padding
# costs less than one matmul set per slot; past it (prompts of very different lengths on several adapters)
# each slot's rows are multiplied on their own.
MAX_GROUPED_ROWS_PER_ADAPTER_ROW = 2


@dataclass
class SlotGroups:
    """Rows grouped by slot for :func:`pagedllm_lora.punica.add_lora_grouped`."""

    slots: slice  # the slots of the groups, in order: a slice, so the layers' slot tensors are read in place
    rows: torch.Tensor  # [num_groups, rows_per_group] the step's rows of each slot, padded with any row
    row_mask: torch.Tensor | None  # [num_groups, rows_per_group, 1] zero on padding; None: no padding


@dataclass
class LoRAStepState:
    """Which slot each token of the step uses, shared by every wrapped layer (the manager sets it)."""

    # [num_tokens] slot index, -1 for the base model (the Triton kernels read this)
    token_slots: torch.Tensor | None = None
    # Slots some token of the step uses; empty: the step runs the base model only.
    active_slots: frozenset[int] = field(default_factory=frozenset)
    # One slot in use: that slot, and [num_tokens, 1] one for its tokens, zero for base ones (None: all its).
    one_slot: int | None = None
    row_mask: torch.Tensor | None = None
    # Several slots in use: one batch of groups over them all, or one group per slot.
    groups: list[SlotGroups] = field(default_factory=list)

    def update(self, token_slots: torch.Tensor | None, device: torch.device, dtype: torch.dtype) -> None:
        """Plan the step from each token's slot (a CPU int64 tensor, -1: base model; None: no adapter)."""
        self.token_slots, self.active_slots, self.one_slot, self.row_mask = None, frozenset(), None, None
        self.groups = []
        if token_slots is None:
            return
        adapter_rows = (token_slots >= 0).nonzero().squeeze(-1)
        row_slots = token_slots[adapter_rows]
        active = sorted(set(row_slots.tolist()))
        if not active:
            return
        self.token_slots = token_slots.to(device)
        self.active_slots = frozenset(active)
        if len(active) == 1:
            self.one_slot = active[0]
            if len(adapter_rows) < len(token_slots):
                self.row_mask = (token_slots >= 0).to(dtype).unsqueeze(1).to(device)
            return
        low, num_groups = active[0], active[-1] + 1 - active[0]
        counts = torch.bincount(row_slots - low, minlength=num_groups)
        rows_per_group = int(counts.max())
        if num_groups * rows_per_group <= MAX_GROUPED_ROWS_PER_ADAPTER_ROW * len(adapter_rows):
            self.groups = [_groups(adapter_rows, row_slots - low, counts, rows_per_group, slice(low, low + num_groups),
                                   device, dtype)]
        else:
            self.groups = [
                SlotGroups(slice(slot, slot + 1), adapter_rows[row_slots == slot].unsqueeze(0).to(device), None)
                for slot in active
            ]


def _groups(rows: torch.Tensor, group_of_row: torch.Tensor, counts: torch.Tensor, rows_per_group: int,
            slots: slice, device: torch.device, dtype: torch.dtype) -> SlotGroups:
    """``rows`` laid out as ``[len(counts), rows_per_group]`` by group, padded with the first row (masked)."""
    order = torch.argsort(group_of_row, stable=True)
    rows, group_of_row = rows[order], group_of_row[order]
    position = torch.arange(len(rows)) - (torch.cumsum(counts, 0) - counts)[group_of_row]
    grouped = torch.full((len(counts), rows_per_group), int(rows[0]), dtype=rows.dtype)
    grouped[group_of_row, position] = rows
    row_mask = None
    if grouped.numel() > len(rows):
        row_mask = torch.zeros(len(counts), rows_per_group, 1, dtype=dtype)
        row_mask[group_of_row, position] = 1
        row_mask = row_mask.to(device)
    return SlotGroups(slots, grouped.to(device), row_mask)

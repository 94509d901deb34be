"""The batched LoRA op in plain PyTorch: every row's delta in one pass, each row through its own slot.

Slot layout (one adapter per slot, scaling folded into B, ranks padded with zeros to the slot rank ``R``),
for a layer whose output is ``P`` projections of ``output_sizes`` side by side (q/k/v: 3, gate/up: 2):

- ``lora_a [num_slots, P * R, in_features]``: the projections' A matrices stacked along the rank, so one
  shrink serves them all (they read the same input);
- ``lora_b [num_slots, R, out_features]``: each projection's B over its own output columns, side by side
  (not block-diagonal: a projection's expand reads only its own ``R x size`` block).

Two CPU paths, each computing every row's delta with its own adapter and reading each slot's weights in
place (no per-row copies of A or B):

- :func:`add_lora_one_slot`: one adapter in the step: a shrink over all rows, a row mask zeroing the
  base-model rows, one expand per projection added into its columns.
- :func:`add_lora_grouped`: the rows grouped by slot into ``[num_groups, rows_per_group]`` (padded), one
  ``bmm`` shrinks every group by its own slot's A and one ``bmm`` per projection expands by its B
  (S-LoRA / Punica's gathered matmul, batch-wise over slots): decode steps of many adapters are a batch of
  one row per slot. Called once per slot with that slot's rows, it is the segmented form for prompts
  whose slots hold very different numbers of rows.
"""

from __future__ import annotations

import torch


def add_lora_one_slot(output: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                      row_mask: torch.Tensor | None, output_sizes: list[int]) -> torch.Tensor:
    """``output[t] += (x[t] @ lora_a.T) @ lora_b`` per projection, for the rows ``row_mask`` keeps (None: all).

    lora_a: [P * R, in_features] and lora_b: [R, out_features], one slot's; row_mask: [num_rows, 1].
    Returns ``output``, updated in place.
    """
    shrunk = x @ lora_a.T
    if row_mask is not None:
        shrunk.mul_(row_mask)
    rank, start = lora_b.shape[0], 0
    for index, size in enumerate(output_sizes):
        output[:, start : start + size].addmm_(shrunk[:, index * rank : (index + 1) * rank],
                                               lora_b[:, start : start + size])
        start += size
    return output


def add_lora_grouped(output: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                     rows: torch.Tensor, row_mask: torch.Tensor | None, output_sizes: list[int]) -> torch.Tensor:
    """``output[rows[g, i]] += (x[rows[g, i]] @ lora_a[g].T) @ lora_b[g]`` per projection, for every group ``g``.

    lora_a: [num_groups, P * R, in_features] and lora_b: [num_groups, R, out_features], the groups' slots;
    rows: [num_groups, rows_per_group] the rows of each group, padded with any row that ``row_mask``
    ([num_groups, rows_per_group, 1]; None: no padding) zeroes. Returns ``output``, updated in place.
    """
    shrunk = torch.bmm(x[rows], lora_a.transpose(1, 2))  # [groups, rows_per_group, P * R]
    if row_mask is not None:
        shrunk.mul_(row_mask)
    rank, start, deltas = lora_b.shape[1], 0, []
    for index, size in enumerate(output_sizes):
        deltas.append(torch.bmm(shrunk[..., index * rank : (index + 1) * rank], lora_b[..., start : start + size]))
        start += size
    delta = deltas[0] if len(deltas) == 1 else torch.cat(deltas, dim=-1)
    return output.index_add_(0, rows.view(-1), delta.view(-1, output.shape[1]))


def add_lora_reference(output: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                       token_slots: torch.Tensor, output_sizes: list[int]) -> torch.Tensor:
    """The same delta row by row and projection by projection (slot -1: none); for tests of the batched ops only."""
    rank = lora_b.shape[1]
    for row, slot in enumerate(token_slots.tolist()):
        if slot < 0:
            continue
        start = 0
        for index, size in enumerate(output_sizes):
            a = lora_a[slot, index * rank : (index + 1) * rank]
            output[row, start : start + size] += (x[row] @ a.T) @ lora_b[slot, :, start : start + size]
            start += size
    return output

"""The batched LoRA ops against the row-by-row reference, on random inputs."""

import pytest
import torch

from pagedllm_lora.ops import torch_op
from pagedllm_lora.punica import add_lora_grouped, add_lora_one_slot, add_lora_reference
from pagedllm_lora.step_state import LoRAStepState

NUM_SLOTS, RANK = 6, 8
OUTPUT_SIZES = [48, 16, 24]  # a fused projection of three pieces, not multiples of any tile


def random_case(num_rows, in_features, output_sizes, dtype, token_slots, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_rows, in_features, generator=generator).to(dtype)
    lora_a = torch.randn(NUM_SLOTS, len(output_sizes) * RANK, in_features, generator=generator).to(dtype)
    lora_b = torch.randn(NUM_SLOTS, RANK, sum(output_sizes), generator=generator).to(dtype)
    output = torch.randn(num_rows, sum(output_sizes), generator=generator).to(dtype)
    return output, x, lora_a, lora_b, torch.tensor(token_slots)


def cycle(pattern, num_rows):
    return [pattern[row % len(pattern)] for row in range(num_rows)]


# Base rows (-1) between adapter rows; slots out of order; a gap (slot 3 unused between 2 and 4); one slot
# with many more rows than the others (prompts of uneven lengths: one group per slot).
STEPS = {
    "one slot with base rows": lambda n: cycle([-1, 2, 2], n),
    "one slot, every row": lambda n: [4] * n,
    "decode of many slots": lambda n: cycle([1, 0, 2, 5, 4], n),
    "grouped with padding": lambda n: cycle([-1, 2, 0, 2, -1, 1], n),
    "uneven: a group per slot": lambda n: [0, 5] + [2] * (n - 2),
}


@pytest.mark.parametrize("output_sizes", [OUTPUT_SIZES, [40]], ids=["fused", "single"])
@pytest.mark.parametrize("num_rows", [2, 7, 40])
@pytest.mark.parametrize("step", list(STEPS))
def test_torch_op_matches_row_by_row(step, num_rows, output_sizes):
    slots = STEPS[step](num_rows)
    output, x, lora_a, lora_b, token_slots = random_case(num_rows, 96, output_sizes, torch.float32, slots)
    expected = add_lora_reference(output.clone(), x, lora_a, lora_b, token_slots, output_sizes)
    state = LoRAStepState()
    state.update(token_slots, torch.device("cpu"), torch.float32)
    got = torch_op(output.clone(), x, lora_a, lora_b, output_sizes, state)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    base_rows = token_slots < 0
    torch.testing.assert_close(got[base_rows], output[base_rows], rtol=0, atol=0)


def test_step_plans():
    """Each step shape gets the path meant for it (the op's speed depends on it, its result does not)."""
    state, cpu = LoRAStepState(), torch.device("cpu")
    state.update(torch.tensor([-1, 3, 3]), cpu, torch.float32)
    assert state.one_slot == 3 and state.row_mask.flatten().tolist() == [0, 1, 1] and not state.groups
    state.update(torch.tensor([3, 3]), cpu, torch.float32)
    assert state.one_slot == 3 and state.row_mask is None
    state.update(torch.tensor([1, 0, 2, -1]), cpu, torch.float32)  # decode: one row per slot, no padding
    (group,) = state.groups
    assert group.slots == slice(0, 3) and group.rows.tolist() == [[1], [0], [2]] and group.row_mask is None
    state.update(torch.tensor([0, 0, 2]), cpu, torch.float32)  # slot 1 empty: padded and masked
    (group,) = state.groups
    assert group.slots == slice(0, 3) and group.row_mask.flatten().tolist() == [1, 1, 0, 0, 1, 0]
    state.update(torch.tensor([0] + [1] * 9), cpu, torch.float32)  # 2 x 9 batch rows for 10: grouped
    assert len(state.groups) == 1
    state.update(torch.tensor([0, 5] + [1] * 9), cpu, torch.float32)  # 6 x 9 rows for 11: one group per slot
    assert [(group.slots, group.rows.tolist()) for group in state.groups] == [
        (slice(0, 1), [[0]]), (slice(1, 2), [list(range(2, 11))]), (slice(5, 6), [[1]])]
    state.update(torch.tensor([-1, -1]), cpu, torch.float32)
    assert not state.active_slots and state.one_slot is None and not state.groups
    state.update(None, cpu, torch.float32)
    assert state.token_slots is None and not state.active_slots


def test_one_slot_and_grouped_ops_directly():
    output, x, lora_a, lora_b, token_slots = random_case(5, 32, OUTPUT_SIZES, torch.float32, [2, -1, 2, 2, -1])
    expected = add_lora_reference(output.clone(), x, lora_a, lora_b, token_slots, OUTPUT_SIZES)
    row_mask = (token_slots >= 0).float().unsqueeze(1)
    got = add_lora_one_slot(output.clone(), x, lora_a[2], lora_b[2], row_mask, OUTPUT_SIZES)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    rows = torch.tensor([[0, 2, 3]])
    got = add_lora_grouped(output.clone(), x, lora_a[2:3], lora_b[2:3], rows, None, OUTPUT_SIZES)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


triton = pytest.importorskip("triton", reason="triton is not installed")


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.float16, 2e-2)], ids=str)
@pytest.mark.parametrize("num_rows,in_features,output_sizes", [(1, 64, [64]), (9, 100, [130]), (33, 192, [72, 24, 40])])
def test_triton_kernels_match_the_torch_op(dtype, tolerance, num_rows, in_features, output_sizes):
    from pagedllm_lora.triton_ops import add_lora as triton_add_lora

    slots = cycle([-1, 2, 0, 2, -1, 1, 5], num_rows)
    output, x, lora_a, lora_b, token_slots = random_case(num_rows, in_features, output_sizes, dtype, slots,
                                                         seed=num_rows)
    state = LoRAStepState()
    state.update(token_slots, torch.device("cpu"), torch.float32)
    expected = torch_op(output.float().clone(), x.float(), lora_a.float(), lora_b.float(), output_sizes, state)
    got = triton_add_lora(output.clone(), x, lora_a, lora_b, token_slots, output_sizes)
    torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance * 10)
    assert torch.equal(got[token_slots < 0], output[token_slots < 0])

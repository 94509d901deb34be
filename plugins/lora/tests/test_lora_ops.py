"""The batched LoRA ops against the row-by-row reference, on random inputs."""

import pytest
import torch

from pagedllm_lora.punica import add_lora, add_lora_gathered, add_lora_reference, add_lora_segmented

NUM_SLOTS, WIDTH = 4, 24  # a width that is not a power of two, as with 3 projections of rank 8


def random_case(num_rows, in_features, out_features, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_rows, in_features, generator=generator).to(dtype)
    lora_a = torch.randn(NUM_SLOTS, WIDTH, in_features, generator=generator).to(dtype)
    lora_b = torch.randn(NUM_SLOTS, WIDTH, out_features, generator=generator).to(dtype)
    output = torch.randn(num_rows, out_features, generator=generator).to(dtype)
    # Base rows (-1) between adapter rows, slots in no order, one slot unused.
    token_slots = torch.tensor([(-1, 2, 0, 2, -1, 1)[row % 6] for row in range(num_rows)])
    return output, x, lora_a, lora_b, token_slots


def slot_mask(token_slots, num_slots, dtype):
    return (token_slots.unsqueeze(1) == torch.arange(num_slots)).to(dtype)


@pytest.mark.parametrize("num_rows", [1, 7, 40])
def test_torch_op_matches_row_by_row(num_rows):
    output, x, lora_a, lora_b, token_slots = random_case(num_rows, 96, 80, torch.float32)
    expected = add_lora_reference(output.clone(), x, lora_a, lora_b, token_slots)
    # The slots in use (0..2) are all the op reads; slot 3 holds weights that must not leak in.
    got = add_lora(output.clone(), x, lora_a, lora_b, slot_mask(token_slots, 3, torch.float32))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    base_rows = token_slots < 0
    torch.testing.assert_close(got[base_rows], output[base_rows], rtol=0, atol=0)


@pytest.mark.parametrize("path", ["gathered", "segmented"])
@pytest.mark.parametrize("num_rows", [1, 7, 40])
def test_gathered_and_segmented_ops_match_row_by_row(num_rows, path):
    output, x, lora_a, lora_b, token_slots = random_case(num_rows, 96, 80, torch.float32)
    expected = add_lora_reference(output.clone(), x, lora_a, lora_b, token_slots)
    rows = (token_slots >= 0).nonzero().squeeze(-1)
    if path == "gathered":
        got = add_lora_gathered(output.clone(), x, lora_a, lora_b, rows, token_slots[rows])
    else:
        rows_by_slot = {slot: (token_slots == slot).nonzero().squeeze(-1) for slot in (0, 1, 2)}
        got = add_lora_segmented(output.clone(), x, lora_a, lora_b, rows_by_slot)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    base_rows = token_slots < 0
    torch.testing.assert_close(got[base_rows], output[base_rows], rtol=0, atol=0)


def test_gathered_op_leaves_an_all_base_step_alone():
    output, x, lora_a, lora_b, _ = random_case(5, 96, 80, torch.float32)
    no_rows = torch.empty(0, dtype=torch.int64)
    assert torch.equal(add_lora_gathered(output.clone(), x, lora_a, lora_b, no_rows, no_rows), output)


triton = pytest.importorskip("triton", reason="triton is not installed")


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.float16, 2e-2)], ids=str)
@pytest.mark.parametrize("num_rows,in_features,out_features", [(1, 64, 64), (9, 100, 130), (33, 192, 72)])
def test_triton_kernels_match_the_torch_op(dtype, tolerance, num_rows, in_features, out_features):
    from pagedllm_lora.triton_ops import add_lora as triton_add_lora

    output, x, lora_a, lora_b, token_slots = random_case(num_rows, in_features, out_features, dtype, seed=num_rows)
    expected = add_lora(output.float().clone(), x.float(), lora_a.float(), lora_b.float(),
                        slot_mask(token_slots, NUM_SLOTS, torch.float32))
    got = triton_add_lora(output.clone(), x, lora_a, lora_b, token_slots)
    torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance * 10)
    assert torch.equal(got[token_slots < 0], output[token_slots < 0])

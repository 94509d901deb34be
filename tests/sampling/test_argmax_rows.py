"""argmax_rows, the samplers' row argmax, picks what torch's argmax picks: the first of tied maxima, NaN first."""

import pytest
import torch

from pagedllm_core.sampling.sampler import argmax_rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_argmax_rows_equals_torch_argmax_with_ties_infinities_and_nans(dtype):
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(0, 4, (64, 1000), generator=generator).to(dtype)  # every row has ties
    values[1, 500] = float("nan")
    values[2, 7], values[2, 900] = float("nan"), float("nan")
    values[3] = float("-inf")
    values[4, 10], values[4, 20] = float("inf"), float("inf")
    values[5, 999] = 9
    expected = values.argmax(dim=-1)
    assert torch.equal(argmax_rows(values), expected)
    assert expected[1] == 500 and expected[2] == 7 and expected[3] == 0 and expected[4] == 10 and expected[5] == 999
    assert torch.equal(argmax_rows(values[:, ::3]), values[:, ::3].argmax(dim=-1))  # strided rows

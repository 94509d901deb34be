import pytest
import torch
from cuda_attention_checks import needs_cuda

from pagedllm_core.attention.conformance import CACHE_WRITE_CASES, check_cache_write, check_cache_write_of_strided_inputs

pytestmark = needs_cuda


def reshape_and_cache(key, value, kv_cache, slot_mapping):
    from pagedllm_attention_cuda.kernels import load_kernels

    load_kernels().reshape_and_cache(key, value, kv_cache, slot_mapping)


@pytest.mark.parametrize("case", CACHE_WRITE_CASES, ids=str)
def test_write_matches_reference(case):
    check_cache_write(reshape_and_cache, case, device="cuda")


def test_write_follows_strided_inputs():
    check_cache_write_of_strided_inputs(reshape_and_cache, torch.float16, device="cuda")

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_attention_triton.cache_write import write_kv_cache  # noqa: E402

from pagedllm_core.attention.conformance import (  # noqa: E402
    CACHE_WRITE_CASES,
    check_cache_write,
    check_cache_write_of_strided_inputs,
)


@pytest.mark.parametrize("case", CACHE_WRITE_CASES, ids=str)
def test_write_matches_reference(case):
    check_cache_write(write_kv_cache, case)


def test_write_follows_strided_inputs():
    check_cache_write_of_strided_inputs(write_kv_cache, torch.float32)

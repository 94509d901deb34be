"""The oracle itself on a GPU: the torch backend's paged attention on CUDA equals its float32 CPU run."""

import dataclasses

import pytest
import torch
from cuda_attention_checks import cuda_step, needs_cuda

from pagedllm_core.attention.conformance import DTYPES, TOLERANCES, reference_forward

pytestmark = needs_cuda


def on_cpu_in_float32(step):
    def move(tensor):
        return tensor.cpu().float() if tensor.is_floating_point() else tensor.cpu()

    metadata = dataclasses.replace(
        step.metadata, **{field: move(getattr(step.metadata, field))
                          for field in ("slot_mapping", "query_start_loc", "seq_lens", "block_tables")}
    )
    return dataclasses.replace(
        step, query=move(step.query), key=move(step.key), value=move(step.value), kv_cache=move(step.kv_cache),
        metadata=metadata,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("seq_lens", "query_lens"), [([50, 12, 33, 700], [1, 12, 1, 25]), ([300, 4000], [1, 1])])
def test_reference_on_cuda_matches_cpu(dtype, seq_lens, query_lens):
    step = cuda_step(seq_lens, query_lens, num_heads=8, num_kv_heads=2, head_size=128, block_size=16, dtype=dtype)
    cache, output = reference_forward(step)
    expected_cache, expected = reference_forward(on_cpu_in_float32(step))

    assert torch.equal(cache.cpu().float(), expected_cache)
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(output.cpu().float(), expected, rtol=rtol, atol=atol)

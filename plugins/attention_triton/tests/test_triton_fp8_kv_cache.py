"""The triton backend's FP8 KV cache against the torch reference over the dequantized cache."""

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_attention_triton.backend import TritonAttentionBackend  # noqa: E402
from pagedllm_attention_triton.decode import DecodeSplit  # noqa: E402
from pagedllm_core.attention.fp8_conformance import compare_fp8_backend, fp8_step  # noqa: E402
from pagedllm_core.bench.attention import build_random_step  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize(
    "seq_lens, query_lens, decode_split",
    [
        ([37, 200, 16, 5], [1, 1, 1, 1], None),  # decode kernel, one partition
        ([200, 130], [1, 1], DecodeSplit(4, 64)),  # decode split-K and its reduction
        ([300, 70, 33], [1, 50, 33], None),  # prefill kernel: a decode row, a later chunk, a fresh prompt
    ],
)
def test_fp8_cache_matches_reference(cache_dtype, seq_lens, query_lens, decode_split):
    step, kv_scales = fp8_step(
        build_random_step(
            seq_lens, query_lens, num_heads=4, num_kv_heads=2, head_size=64, block_size=16, dtype=torch.float32,
            device=DEVICE,
        ),
        cache_dtype,
    )
    backend = TritonAttentionBackend(step.spec)
    if decode_split is not None:
        backend._plan_decode_split = lambda *args: decode_split
    result = compare_fp8_backend(backend, step, kv_scales)
    assert torch.equal(result.cache, result.expected_cache)
    torch.testing.assert_close(result.output, result.expected_output, rtol=1e-4, atol=1e-5)


def test_declares_fp8():
    assert set(TritonAttentionBackend.supported_kv_cache_dtypes(torch.float16)) >= {
        torch.float8_e4m3fn, torch.float8_e5m2
    }

"""The kernels built for narrower vector units than this machine's: AVX2's 8 floats, and one float (no vector
intrinsics, as on a CPU the kernels know no vectors for), against the torch reference. The engine builds for the
machine it runs on, so without this only the widest path a CI machine has would ever be tested."""

import pytest
import torch
from torch.utils.cpp_extension import load

from pagedllm_attention_cpu.backend import CpuAttentionBackend
from pagedllm_attention_cpu.kernels import SOURCES
from pagedllm_core.attention.reference import paged_attention, write_kv_cache
from pagedllm_core.bench.attention import build_random_step
from pagedllm_core.cpu_flags import cpu_flags

BUILDS = {
    "avx2": ["-O3", "-fopenmp", "-mavx2", "-mfma", "-mf16c"],
    "scalar": ["-O3", "-fopenmp"],
}


@pytest.fixture(scope="module", params=list(BUILDS))
def kernels(request):
    if request.param == "avx2" and not {"avx2", "fma", "f16c"} <= cpu_flags():
        pytest.skip("this CPU has no AVX2")
    return load(name=f"pagedllm_attention_cpu_{request.param}_width", sources=[str(source) for source in SOURCES],
                extra_cflags=BUILDS[request.param], extra_ldflags=["-fopenmp"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_heads, num_kv_heads, head_size, block_size", [(9, 3, 64, 16), (8, 1, 128, 8), (4, 4, 80, 24)])
def test_decode_rows_and_chunks_match_the_reference(kernels, dtype, num_heads, num_kv_heads, head_size, block_size):
    step = build_random_step([300, 70, 33, 128, 5], [1, 50, 1, 128, 5], num_heads=num_heads,
                             num_kv_heads=num_kv_heads, head_size=head_size, block_size=block_size, dtype=dtype)
    cache = step.kv_cache.clone()
    write_kv_cache(step.key, step.value, cache, step.metadata.slot_mapping)
    expected = paged_attention(step.query, cache, step.metadata, step.spec.scale)

    backend = CpuAttentionBackend(step.spec)
    backend.prepare(step.metadata)
    decode, chunks = step.metadata.backend_data.decode, step.metadata.backend_data.chunks
    actual = torch.empty_like(step.query)
    kernels.paged_decode(actual, step.query, cache[0], cache[1], decode.token_index, decode.block_tables,
                         decode.seq_lens, step.spec.scale, 1.0, 1.0)
    kernels.chunk_attention(actual, step.query, cache[0], cache[1], chunks.query_start, chunks.query_lens,
                            chunks.block_tables, chunks.seq_lens, step.spec.scale, 1.0, 1.0)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(actual, expected, rtol=tolerance * 10, atol=tolerance)

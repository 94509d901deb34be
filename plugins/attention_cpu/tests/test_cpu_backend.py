import pytest
import torch

from pagedllm_attention_cpu import backend as cpu_backend
from pagedllm_attention_cpu.backend import CpuAttentionBackend
from pagedllm_attention_cpu.kernels import load_kernels
from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.attention.conformance import (
    CACHE_WRITE_CASES,
    assert_matches_reference,
    check_cache_write,
    check_cache_write_of_strided_inputs,
    check_native_decode,
    reference_forward,
)
from pagedllm_core.attention.reference import paged_attention, write_kv_cache
from pagedllm_core.bench.attention import build_random_step

# (rtol, atol) against the torch reference in the same dtype; half-precision outputs are rounded by both.
TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}


def run_both(seq_lens, query_lens, dtype=torch.float32, num_heads=6, num_kv_heads=2, head_size=64, block_size=16):
    step = build_random_step(
        seq_lens, query_lens, num_heads=num_heads, num_kv_heads=num_kv_heads, head_size=head_size,
        block_size=block_size, dtype=dtype,
    )
    expected_cache = step.kv_cache.clone()
    write_kv_cache(step.key, step.value, expected_cache, step.metadata.slot_mapping)
    expected = paged_attention(step.query, expected_cache, step.metadata, step.spec.scale)

    backend = CpuAttentionBackend(step.spec)
    backend.prepare(step.metadata)
    cache = step.kv_cache.clone()
    actual = backend.forward(step.query, step.key, step.value, cache, step.metadata)
    return actual, expected, cache, expected_cache


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize(
    "seq_lens, query_lens",
    [
        ([1], [1]),  # a one-token context
        ([37, 200, 16, 5], [1, 1, 1, 1]),  # decode only, partial and full last blocks
        ([40, 9], [40, 9]),  # fresh prompts (causal on their own keys)
        ([300, 70, 33, 128], [1, 50, 1, 128]),  # decode rows mixed with a later chunk and a fresh prompt
        # Up to 16 new tokens run as decode rows, each seeing the positions up to its own: a speculative
        # verification's 5 tokens, a 16-token chunk after earlier context, a fresh 5-token prompt; 17 are a chunk.
        ([80, 23, 5, 90], [5, 16, 5, 17]),
        # Chunks longer than a task's 32 positions, one after 267 tokens of context, keys over many tiles.
        ([600, 257, 1], [333, 257, 1]),
    ],
)
def test_matches_reference(dtype, seq_lens, query_lens):
    actual, expected, cache, expected_cache = run_both(seq_lens, query_lens, dtype)
    assert torch.equal(cache, expected_cache)
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("num_heads, num_kv_heads, head_size, block_size", [(4, 4, 32, 16), (8, 1, 128, 8), (9, 3, 80, 24)])
def test_head_layouts_and_block_sizes(num_heads, num_kv_heads, head_size, block_size):
    actual, expected, _, _ = run_both(
        [90, 17, 64], [1, 17, 3], num_heads=num_heads, num_kv_heads=num_kv_heads, head_size=head_size,
        block_size=block_size,
    )
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_the_chunk_kernel_refuses_a_chunk_outside_its_rows_or_blocks():
    step = build_random_step([40], [40], num_heads=6, num_kv_heads=2, head_size=64, block_size=16, dtype=torch.float32)
    kernels, cache, output = load_kernels(), step.kv_cache, torch.empty_like(step.query)
    block_tables = step.metadata.block_tables.contiguous()

    def run(query_start, query_len, seq_len):
        kernels.chunk_attention(output, step.query, cache[0], cache[1], torch.tensor([query_start]),
                                torch.tensor([query_len]), block_tables, torch.tensor([seq_len], dtype=torch.int32),
                                0.125, 1.0, 1.0)

    with pytest.raises(RuntimeError, match="outside the query's 40 rows"):
        run(10, 40, 40)
    with pytest.raises(RuntimeError, match="in 48 slots of blocks"):
        run(0, 40, 49)


def test_reports_why_it_cannot_run():
    spec = AttentionSpec(num_heads=6, num_kv_heads=4, head_size=64, scale=0.125, block_size=16,
                         kv_cache_dtype=torch.float64, device=torch.device("meta"))
    reasons = CpuAttentionBackend.unsupported_reasons(spec)
    assert len(reasons) == 3
    assert any("cpu only" in reason for reason in reasons)


@pytest.mark.parametrize("case", [case for case in CACHE_WRITE_CASES if case[0] == case[1]])
def test_cache_write_matches_reference(case):
    check_cache_write(cpu_backend.write_kv_cache, case)


@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_cache_write_of_strided_keys_and_values(dtype):
    check_cache_write_of_strided_inputs(cpu_backend.write_kv_cache, dtype)


def test_cache_write_rejects_a_slot_outside_the_cache():
    kv_cache = torch.zeros(2, 4, 16, 2, 64)
    key = torch.randn(1, 2, 64)
    with pytest.raises(RuntimeError, match="slot 64 is outside the cache's 64 slots"):
        cpu_backend.write_kv_cache(key, key, kv_cache, torch.tensor([64]))
    assert not kv_cache.any()


def test_queries_keys_and_values_sliced_from_a_fused_projection():
    # The model hands the backend views of one [tokens, q + k + v] output: rows strided, heads contiguous.
    step = build_random_step([37, 200, 21], [1, 1, 21], num_heads=6, num_kv_heads=2, head_size=64, block_size=16,
                             dtype=torch.float32)
    expected_cache, expected = reference_forward(step)
    fused = torch.cat([step.query.flatten(1), step.key.flatten(1), step.value.flatten(1)], dim=-1)
    query, key, value = (part.unflatten(-1, (-1, 64)) for part in fused.split([384, 128, 128], dim=-1))
    backend = CpuAttentionBackend(step.spec)
    backend.prepare(step.metadata)
    cache = step.kv_cache.clone()
    actual = backend.forward(query, key, value, cache, step.metadata)
    assert torch.equal(cache, expected_cache)
    assert_matches_reference(actual, expected)


@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_the_native_decode_operator_does_what_forward_does(dtype):
    step = build_random_step([37, 200, 16, 5], [1, 1, 1, 1], num_heads=6, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=dtype)
    check_native_decode(CpuAttentionBackend(step.spec), step)


def test_a_step_of_short_chunks_is_decode_rows_for_the_native_operator():
    step = build_random_step([80, 23, 5], [5, 16, 5], num_heads=6, num_kv_heads=2, head_size=64, block_size=16,
                             dtype=torch.float32)
    backend = CpuAttentionBackend(step.spec)
    backend.prepare(step.metadata)
    decode = step.metadata.backend_data.decode
    assert decode.token_index.tolist() == list(range(26))
    assert decode.seq_lens.tolist() == [*range(76, 81), *range(8, 24), *range(1, 6)]
    assert backend.native_step_arguments(step.metadata) is not None
    check_native_decode(backend, step)


def test_steps_with_a_prompt_chunk_go_through_forward():
    step = build_random_step([300, 70], [1, 17], num_heads=6, num_kv_heads=2, head_size=64, block_size=16,
                             dtype=torch.float32)
    backend = CpuAttentionBackend(step.spec)
    backend.prepare(step.metadata)
    assert backend.native_step_arguments(step.metadata) is None

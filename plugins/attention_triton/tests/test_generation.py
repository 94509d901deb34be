import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_core.attention.conformance import greedy_token_ids  # noqa: E402
from pagedllm_core.testing import build_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    # The tiny default head size (16) is below what the kernels support.
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), "LlamaForCausalLM", head_dim=64)


@pytest.mark.parametrize("max_num_batched_tokens", [2048, 8])
def test_greedy_generation_matches_the_torch_backend(tiny_llama, max_num_batched_tokens):
    _, expected = greedy_token_ids(tiny_llama, "torch", max_num_batched_tokens)
    assert greedy_token_ids(tiny_llama, "triton", max_num_batched_tokens) == ("TritonAttentionBackend", expected)

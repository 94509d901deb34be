import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_attention_triton.backend import TritonAttentionBackend  # noqa: E402

from pagedllm_core import LLM, SamplingParams  # noqa: E402
from pagedllm_core.testing import build_tiny_model  # noqa: E402

PROMPTS = ["The quick brown fox", "Hello, world! How are", "Once upon a time there was a little model that"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    # The tiny default head size (16) is below what the kernels support.
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), "LlamaForCausalLM", head_dim=64)


def greedy_tokens(model_dir, attention_backend, max_num_batched_tokens):
    llm = LLM(
        model=str(model_dir),
        attention_backend=attention_backend,
        dtype="float32",
        num_kv_blocks=64,
        max_num_batched_tokens=max_num_batched_tokens,
    )
    if attention_backend == "triton":
        assert isinstance(llm.llm_engine.executor.worker.model_runner.attention, TritonAttentionBackend)
    outputs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)
    return [output.outputs[0].token_ids for output in outputs]


# A budget of 8 tokens splits the prompts into chunks: prefill over cached context, mixed batches.
@pytest.mark.parametrize("max_num_batched_tokens", [2048, 8])
def test_greedy_generation_matches_the_torch_backend(tiny_llama, max_num_batched_tokens):
    expected = greedy_tokens(tiny_llama, "torch", max_num_batched_tokens)
    assert greedy_tokens(tiny_llama, "triton", max_num_batched_tokens) == expected

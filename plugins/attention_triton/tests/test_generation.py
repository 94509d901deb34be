import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pagedllm_core import LLM, SamplingParams  # noqa: E402
from pagedllm_core.testing import build_tiny_model  # noqa: E402

PROMPTS = ["The quick brown fox", "Hello, world! How are", "Once upon a time there was a little model that"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    # The tiny default head size (16) is below what the kernels support.
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), "LlamaForCausalLM", head_dim=64)


def greedy_tokens(model_dir, attention_backend):
    llm = LLM(model=str(model_dir), attention_backend=attention_backend, dtype="float32", num_kv_blocks=64)
    outputs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)
    return [output.outputs[0].token_ids for output in outputs]


def test_greedy_generation_matches_the_torch_backend(tiny_llama):
    assert greedy_tokens(tiny_llama, "triton") == greedy_tokens(tiny_llama, "torch")

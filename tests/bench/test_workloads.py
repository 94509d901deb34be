"""The W1/W3/W4 prompts: deterministic, of the asked lengths, without special tokens."""

from pagedllm_core.bench.workloads import latency_workload, serve_workload, throughput_workload


def test_throughput_workload_is_w1_and_deterministic():
    workload = throughput_workload(vocab_size=1000, excluded_token_ids=[0, 1, 2])
    assert workload.name == "W1" and workload.output_len == 128 and len(workload.prompts) == 200
    assert all(64 <= len(prompt) <= 512 for prompt in workload.prompts)
    assert len({len(prompt) for prompt in workload.prompts}) > 100  # lengths spread over the range
    assert workload.prompts == throughput_workload(vocab_size=1000, excluded_token_ids=[0, 1, 2]).prompts
    assert workload.prompts != throughput_workload(vocab_size=1000, excluded_token_ids=[0, 1, 2], seed=1).prompts
    token_ids = {token for prompt in workload.prompts for token in prompt}
    assert token_ids <= set(range(3, 1000)) and len(token_ids) > 900
    assert workload.num_prompt_tokens == sum(len(prompt) for prompt in workload.prompts)
    assert workload.num_output_tokens == 200 * 128


def test_serve_and_latency_workloads_have_fixed_lengths():
    serve = serve_workload(vocab_size=50)
    assert serve.name == "W3" and serve.output_len == 128
    assert [len(prompt) for prompt in serve.prompts] == [256] * 200
    latency = latency_workload(vocab_size=50, num_prompts=3)
    assert latency.name == "W4" and latency.output_len == 128
    assert [len(prompt) for prompt in latency.prompts] == [128] * 3
    assert len({tuple(prompt) for prompt in latency.prompts}) == 3  # a fresh prompt per iteration

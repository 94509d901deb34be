"""LoRA adapters through the offline API, checked against transformers + peft on a tiny Llama."""

import pytest

pytest.importorskip("peft")

from peft_adapters import ALL_TARGETS, make_peft_adapter, peft_greedy  # noqa: E402

from pagedllm_core import LLM, LoRARequest, SamplingParams  # noqa: E402
from pagedllm_core.testing import build_tiny_model  # noqa: E402

NUM_NEW_TOKENS = 12
PROMPTS = ["The quick brown fox", "Hello, world! How are", "Once upon a time there was"]
# (name, rank, alpha, targets, rsLoRA): different ranks, one rsLoRA, one on a subset of projections.
ADAPTERS = [
    ("qv-r4", 4, 8, ["q_proj", "v_proj"], False),
    ("all-r8", 8, 16, ALL_TARGETS, False),
    ("rs-r16", 16, 8, ALL_TARGETS, True),
]
GREEDY = SamplingParams(temperature=0.0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model_dir = build_tiny_model(tmp_path_factory.mktemp("model"), "LlamaForCausalLM")
    requests = [
        LoRARequest(name, index + 1, make_peft_adapter(model_dir, tmp_path_factory.mktemp(name), r, alpha, targets,
                                                       rslora, seed=index))
        for index, (name, r, alpha, targets, rslora) in enumerate(ADAPTERS)
    ]
    llm = LLM(model=str(model_dir), dtype="float32", enable_lora=True, max_loras=3, max_lora_rank=16,
              num_kv_blocks=64, seed=0)
    prompt_ids = [llm.get_tokenizer().encode(prompt) for prompt in PROMPTS]
    return model_dir, requests, llm, prompt_ids


def token_ids(outputs):
    return [output.outputs[0].token_ids for output in outputs]


def test_each_adapter_matches_peft_merged_and_unmerged(setup):
    model_dir, requests, llm, prompt_ids = setup
    base = peft_greedy(model_dir, None, prompt_ids, NUM_NEW_TOKENS, merge=False)
    assert token_ids(llm.generate(PROMPTS, GREEDY, use_tqdm=False)) == base
    for request in requests:
        ours = token_ids(llm.generate(PROMPTS, GREEDY, use_tqdm=False, lora_request=request))
        assert ours == peft_greedy(model_dir, request.lora_path, prompt_ids, NUM_NEW_TOKENS, merge=False)
        assert ours == peft_greedy(model_dir, request.lora_path, prompt_ids, NUM_NEW_TOKENS, merge=True)
        assert ours != base, f"adapter {request.lora_name} changes nothing: the test would prove nothing"


def test_a_mixed_batch_gives_every_request_its_own_adapter(setup):
    _, requests, llm, _ = setup
    choices = [None, *requests]
    alone = {
        lora.lora_int_id if lora else 0: token_ids(llm.generate(PROMPTS, GREEDY, use_tqdm=False, lora_request=lora))
        for lora in choices
    }
    # Every prompt with every adapter (and none), interleaved, plus repeats of one adapter on one prompt.
    prompts = [prompt for prompt in PROMPTS for _ in choices] + [PROMPTS[0]] * 4
    loras = [lora for _ in PROMPTS for lora in choices] + [requests[1]] * 4
    mixed = token_ids(llm.generate(prompts, GREEDY, use_tqdm=False, lora_request=loras))
    for index, (prompt, lora) in enumerate(zip(prompts, loras)):
        assert mixed[index] == alone[lora.lora_int_id if lora else 0][PROMPTS.index(prompt)], (prompt, lora)


def test_scheduler_runs_at_most_max_loras_adapters_per_step(setup, tmp_path):
    model_dir, requests, _, _ = setup
    llm = LLM(model=str(model_dir), dtype="float32", enable_lora=True, max_loras=1, max_lora_rank=16,
              num_kv_blocks=64, max_cpu_loras=2)
    manager = llm.llm_engine.executor.worker.model_runner.lora_manager
    adapters_per_step = []
    original = manager.set_step_adapters

    def recording(token_lora_ids, lora_requests):
        adapters_per_step.append(len(lora_requests))
        original(token_lora_ids, lora_requests)

    manager.set_step_adapters = recording
    loras = [requests[0], requests[1], None, requests[2], requests[0]]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(loras))]
    outputs = token_ids(llm.generate(prompts, GREEDY, use_tqdm=False, lora_request=loras))
    assert max(adapters_per_step) == 1
    for prompt, lora, output in zip(prompts, loras, outputs):
        assert output == token_ids(llm.generate([prompt], GREEDY, use_tqdm=False, lora_request=lora))[0]
    assert len(manager.list_adapters()) <= 2  # max_cpu_loras
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0


def test_prefix_cache_never_shares_blocks_across_adapters(setup):
    _, requests, llm, _ = setup
    engine = llm.llm_engine
    prompt = "The quick brown fox jumps over the lazy dog. " * 4  # several full blocks
    params = SamplingParams(temperature=0.0, max_tokens=2)

    def hit_tokens(lora):
        before = engine.prefix_cache_stats().num_hit_tokens
        llm.generate([prompt], params, use_tqdm=False, lora_request=lora)
        return engine.prefix_cache_stats().num_hit_tokens - before

    hit_tokens(requests[0])
    assert hit_tokens(requests[0]) > 0  # the same adapter finds its blocks
    assert hit_tokens(requests[1]) == 0  # another adapter does not
    assert hit_tokens(None) == 0  # nor does the base model
    assert hit_tokens(requests[1]) > 0


def test_the_adapter_crosses_the_worker_pipe():
    from pagedllm_core.executor import wire
    from pagedllm_core.executor.messages import NewSequenceData, SchedulerOutput

    lora = LoRARequest("sql-lora", 3, "/adapters/sql", "base")
    data = NewSequenceData("0", [1, 2], [], GREEDY, [2], [0], 0, 2, 1, lora_request=lora)
    message = wire.decode(wire.encode(SchedulerOutput(new_sequences=[data])))
    assert message.new_sequences[0].lora_request == lora
    assert wire.decode(wire.encode(wire.AddLoRA(lora))).lora_request == lora
    assert wire.decode(wire.encode(wire.RemoveLoRA(3))).lora_int_id == 3


@pytest.mark.slow
def test_mp_executor_carries_the_adapter(setup):
    model_dir, requests, llm, _ = setup
    expected = token_ids(llm.generate(PROMPTS[:1], GREEDY, use_tqdm=False, lora_request=requests[2]))
    mp = LLM(model=str(model_dir), dtype="float32", enable_lora=True, max_lora_rank=16, num_kv_blocks=64,
             distributed_executor_backend="mp")
    try:
        assert token_ids(mp.generate(PROMPTS[:1], GREEDY, use_tqdm=False, lora_request=requests[2])) == expected
        with pytest.raises(ValueError, match="is not a directory"):
            mp.generate(PROMPTS[:1], GREEDY, use_tqdm=False, lora_request=LoRARequest("x", 9, "/nonexistent"))
    finally:
        mp.llm_engine.shutdown()


def test_remove_and_reload(setup):
    _, requests, llm, _ = setup
    engine = llm.llm_engine
    before = token_ids(llm.generate(PROMPTS[:1], GREEDY, use_tqdm=False, lora_request=requests[0]))
    assert engine.remove_lora(requests[0].lora_int_id)
    assert requests[0].lora_int_id not in engine.list_loras()
    assert not engine.remove_lora(requests[0].lora_int_id)
    assert token_ids(llm.generate(PROMPTS[:1], GREEDY, use_tqdm=False, lora_request=requests[0])) == before

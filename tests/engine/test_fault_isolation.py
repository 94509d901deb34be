"""A failure that belongs to one request (its sampling, its output constraint, its detokenizer) ends
that request with an error; the other requests of the batch complete and no KV block leaks."""

import asyncio

import pytest
import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.default_sampler import DefaultSampler
from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.engine.llm_engine import LLMEngine
from pagedllm_core.errors import RequestFailedError
from pagedllm_core.hookspecs import hookimpl
from pagedllm_core.plugins import load_plugins
from pagedllm_core.registry import Registry
from pagedllm_core.sampling.constraints import ConstraintState, pack_token_ids
from pagedllm_core.sampling_params import SamplingParams

POISONED_TEMPERATURE = 0.777
GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
NUM_REQUESTS = 32


class PoisonedSampler(DefaultSampler):
    """Raises whenever a row of its batch has the poisoned temperature (a bug one request triggers)."""

    def sample(self, logits, metadata):
        if (metadata.temperature == POISONED_TEMPERATURE).any():
            raise RuntimeError("this request's settings break the sampler")
        return super().sample(logits, metadata)


class PoisonedSamplerPlugin:
    @hookimpl
    def register_samplers(self, register):
        register("poisoned", PoisonedSampler, "raises for one request")


class BrokenConstraint(ConstraintState):
    """Allows every token, then raises on the second accepted one."""

    def __init__(self, vocab_size):
        self.vocab_size, self.num_accepted = vocab_size, 0

    def allowed_token_bitmask(self):
        return pack_token_ids(torch.arange(self.vocab_size), self.vocab_size)

    def accept_token(self, token_id):
        self.num_accepted += 1
        if self.num_accepted == 2:
            raise RuntimeError("the automaton lost its state")
        return True

    def is_complete(self):
        return False

    def copy(self):
        return self


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    plugins = load_plugins()
    plugins.manager.register(PoisonedSamplerPlugin(), name="poisoned-sampler")
    config = EngineConfig(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", sampler="poisoned")
    return LLMEngine(config, Registry.from_plugin_manager(plugins.manager))


def run_batch(engine, poisoned_index, poisoned_params=GREEDY):
    for index in range(NUM_REQUESTS):
        params = poisoned_params if index == poisoned_index else GREEDY
        engine.add_request(f"r{index}", f"Story number {index}:", params)
    return run_to_completion(engine)


def run_to_completion(engine):
    finished = {}
    while engine.has_unfinished_requests():
        finished.update({output.request_id: output for output in engine.step() if output.finished})
    assert engine.kv_cache_stats().num_used_blocks == 0
    return finished


def assert_only_the_poisoned_request_failed(finished, poisoned_index, reason):
    assert len(finished) == NUM_REQUESTS
    failed = {request_id: output.error for request_id, output in finished.items() if output.error}
    assert list(failed) == [f"r{poisoned_index}"] and reason in failed[f"r{poisoned_index}"]
    assert all(len(output.outputs[0].token_ids) == 6 for output in finished.values() if not output.error)


def test_a_sampler_failure_for_one_request_fails_only_that_request(engine):
    poisoned = SamplingParams(temperature=POISONED_TEMPERATURE, max_tokens=6, ignore_eos=True, seed=1)
    finished = run_batch(engine, 7, poisoned)
    assert_only_the_poisoned_request_failed(finished, 7, "sampling failed: RuntimeError")
    # The batch mates' tokens are those they get without the poisoned request beside them.
    alone = run_batch(engine, None)
    assert all(finished[rid].outputs[0].token_ids == alone[rid].outputs[0].token_ids for rid in alone if rid != "r7")


def test_a_constraint_failure_for_one_request_fails_only_that_request(engine):
    for index in range(NUM_REQUESTS):
        engine.add_request(f"r{index}", f"Story number {index}:", GREEDY)
    engine._requests["r3"].first.constraint = BrokenConstraint(engine.vocab_size)
    assert_only_the_poisoned_request_failed(run_to_completion(engine), 3, "the output constraint failed")


def test_a_detokenizer_failure_for_one_request_fails_only_that_request(engine, monkeypatch):
    for index in range(NUM_REQUESTS):
        engine.add_request(f"r{index}", f"Story number {index}:", GREEDY)
    detokenizer = engine.output_processor._states["r11"].sequences[0].detokenizer
    monkeypatch.setattr(detokenizer, "add_tokens", lambda token_ids: 1 / 0)
    assert_only_the_poisoned_request_failed(run_to_completion(engine), 11, "detokenizing failed: ZeroDivisionError")


def test_the_async_engine_raises_the_failure_to_its_caller_and_serves_the_others(engine):
    async def run():
        async_engine = AsyncLLMEngine(engine)
        try:
            poisoned = SamplingParams(temperature=POISONED_TEMPERATURE, max_tokens=6, ignore_eos=True)
            streams = [await async_engine.add_request(f"a{i}", "Hello", GREEDY if i else poisoned) for i in range(8)]

            async def final(stream):
                async for output in stream:
                    if output.finished:
                        return output

            return await asyncio.gather(*(final(stream) for stream in streams), return_exceptions=True)
        finally:
            await asyncio.to_thread(async_engine.shutdown, 10)

    first, *others = asyncio.run(run())
    assert isinstance(first, RequestFailedError) and "sampling failed" in str(first)
    assert all(len(output.outputs[0].token_ids) == 6 for output in others)

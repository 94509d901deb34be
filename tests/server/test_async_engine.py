"""The async engine on its own, over a fake engine (and once over a tiny real model)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.async_engine import AsyncLLMEngine, EngineDeadError
from pagedllm_core.engine.llm_engine import LLMEngine
from pagedllm_core.errors import ConfigError
from pagedllm_core.sampling_params import SamplingParams
from tests.server.fake_engine import FakeEngine


@pytest.fixture
def fake():
    return FakeEngine()


@pytest.fixture
def engine(fake):
    engine = AsyncLLMEngine(fake)
    yield engine
    engine.shutdown(timeout=5)


def wait_idle(engine: AsyncLLMEngine, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.stats().num_used_blocks or engine.stats().num_running_requests:
        assert time.monotonic() < deadline, f"engine still busy: {engine.stats()}"
        time.sleep(0.01)


async def collect(engine: AsyncLLMEngine, request_id: str, prompt, max_tokens: int, **params):
    stream = await engine.add_request(request_id, prompt, SamplingParams(max_tokens=max_tokens, **params))
    with stream:
        return [output async for output in stream]


def test_stream_yields_cumulative_outputs_until_finished(engine):
    outputs = asyncio.run(collect(engine, "r", "hi", 5))
    assert outputs[-1].finished and outputs[-1].outputs[0].text == "abcde"
    assert all(not output.finished for output in outputs[:-1])
    texts = [output.outputs[0].text for output in outputs]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert outputs[-1].prompt_token_ids == [ord("h"), ord("i")]


def test_many_concurrent_requests(engine):
    async def main():
        return await asyncio.gather(*(collect(engine, f"r{i}", [1, 2], 3 + i % 4) for i in range(32)))

    results = asyncio.run(main())
    assert [len(r[-1].outputs[0].token_ids) for r in results] == [3 + i % 4 for i in range(32)]
    wait_idle(engine)


def test_text_is_tokenized_off_the_step_thread(engine, fake):
    asyncio.run(collect(engine, "r", "hello", 2))
    assert fake.step_threads == {"pagedllm-engine-loop"}
    assert fake.tokenizer.encode_threads and "pagedllm-engine-loop" not in fake.tokenizer.encode_threads


def test_text_and_stop_strings_are_made_on_the_output_thread(engine, fake):
    outputs = asyncio.run(collect(engine, "r", "hi", 20, stop=["cd"]))
    final = outputs[-1].outputs[0]
    assert (final.text, final.finish_reason, final.stop_reason) == ("ab", "stop", "cd")
    assert final.token_ids == [ord(c) for c in "abcd"]  # what the core sent after the stop is dropped
    assert fake.tokenizer.decode_threads == {"pagedllm-output-loop"}
    deadline = time.monotonic() + 5
    while fake.requests:  # the step thread was told, and ended the sequence in the core
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_rejected_request_raises_and_engine_keeps_serving(engine):
    with pytest.raises(ConfigError, match="too long"):
        asyncio.run(collect(engine, "r", [1] * 100, 2))
    assert asyncio.run(collect(engine, "r", [1], 2))[-1].finished
    engine.check_health()


def test_closing_a_stream_aborts_its_request(engine, fake):
    async def main():
        stream = await engine.add_request("r", [1], SamplingParams(max_tokens=10_000))
        with stream:
            await anext(stream)
        assert stream.finished

    asyncio.run(main())
    wait_idle(engine)
    assert not fake.requests


def test_cancelled_consumer_aborts_its_request(engine, fake):
    async def main():
        # Far more tokens than the fake engine can make before the cancel, however slowly this loop is scheduled.
        task = asyncio.ensure_future(collect(engine, "r", [1], 10**9))
        while not engine.stats().num_running_requests:
            assert not task.done()
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_idle(engine)


def test_a_slow_consumer_gets_the_newest_output(engine, fake):
    async def main():
        stream = await engine.add_request("r", [1], SamplingParams(max_tokens=50))
        await asyncio.sleep(0.2)  # the loop runs ahead
        with stream:
            return [output async for output in stream]

    outputs = asyncio.run(main())
    assert len(outputs) < 50 and outputs[-1].outputs[0].token_ids == [ord("a") + i % 26 for i in range(50)]


def test_step_failure_kills_the_engine_without_hanging_anyone(engine, fake):
    fake.step_gate = threading.Event()

    async def main():
        stream = await engine.add_request("r", [1], SamplingParams(max_tokens=100))
        fake.fail_next_step = True
        fake.step_gate.set()
        with pytest.raises(EngineDeadError, match="injected step failure"):
            async for _ in stream:
                pass
        with pytest.raises(EngineDeadError):
            await engine.add_request("s", [1], SamplingParams())

    asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert not engine.is_running
    with pytest.raises(EngineDeadError):
        engine.check_health()


def test_shutdown_ends_open_streams(fake):
    engine = AsyncLLMEngine(fake)
    fake.step_gate = threading.Event()

    async def main():
        stream = await engine.add_request("r", [1], SamplingParams(max_tokens=100))
        threading.Timer(0.05, fake.step_gate.set).start()
        await asyncio.to_thread(engine.shutdown, 5)
        with pytest.raises(EngineDeadError, match="shut down"):
            async for _ in stream:
                pass

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_matches_the_synchronous_engine_on_a_tiny_model(tiny_model):
    config = EngineConfig(model=str(tiny_model), num_kv_blocks=64)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    sync_engine = LLMEngine(config)
    sync_engine.add_request("r", "Hello world", params)
    expected = None
    while sync_engine.has_unfinished_requests():
        expected = sync_engine.step()[-1].outputs[0].token_ids

    engine = AsyncLLMEngine(LLMEngine(config))
    try:
        outputs = asyncio.run(collect(engine, "r", "Hello world", 12, temperature=0, ignore_eos=True))
        assert outputs[-1].outputs[0].token_ids == expected
        assert engine.stats().num_used_blocks == 0
    finally:
        engine.shutdown(timeout=5)


def test_stop_strings_logprobs_and_n_match_the_synchronous_engine(tiny_model):
    config = EngineConfig(model=str(tiny_model), num_kv_blocks=64)
    probe = LLMEngine(config)
    probe.add_request("p", "Hello world", SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    text = run_to_end(probe).outputs[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]  # a stop string the greedy output meets halfway
    params = dict(n=2, temperature=0, max_tokens=16, ignore_eos=True, stop=[stop], logprobs=2)
    probe.add_request("s", "Hello world", SamplingParams(**params))
    expected = run_to_end(probe).outputs

    engine = AsyncLLMEngine(LLMEngine(config))
    try:
        got = asyncio.run(collect(engine, "s", "Hello world", **params))[-1].outputs
        wait_idle(engine)
    finally:
        engine.shutdown(timeout=5)
    assert [(c.text, c.token_ids, c.finish_reason, c.stop_reason) for c in got] == [
        (c.text, c.token_ids, c.finish_reason, c.stop_reason) for c in expected
    ]
    assert [c.logprobs for c in got] == [c.logprobs for c in expected]
    assert all(c.stop_reason == stop for c in expected)


def run_to_end(engine: LLMEngine):
    final = None
    while engine.has_unfinished_requests():
        final = next((output for output in engine.step() if output.finished), final)
    return final

"""The server's embedding loop: inputs that wait during a batch run together next, errors reach their callers."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from pagedllm_core.engine.async_engine import EngineDeadError
from pagedllm_core.errors import ConfigError
from pagedllm_core.pooling.async_engine import AsyncEmbeddingEngine
from pagedllm_core.pooling.params import PoolingParams


class GatedEngine:
    """Embeds ``[len(prompt)]`` per prompt; each batch waits for :attr:`gate` and is recorded."""

    tokenizer = None
    max_model_len = 16
    config = SimpleNamespace(max_num_seqs=8)

    def __init__(self):
        self.gate = threading.Event()
        self.started = threading.Event()
        self.batches: list[list[list[int]]] = []

    def check_params(self, params):
        pass

    def embed(self, prompts, params):
        self.started.set()
        self.gate.wait(10)
        if [99] in prompts:
            raise ConfigError("prompt 99 is refused")
        self.batches.append(list(prompts))
        return [[float(len(prompt))] for prompt in prompts]


@pytest.fixture
def gated():
    engine = GatedEngine()
    async_engine = AsyncEmbeddingEngine(engine)
    yield engine, async_engine
    engine.gate.set()
    async_engine.shutdown(timeout=5)


def test_waiting_inputs_form_the_next_batch(gated):
    engine, async_engine = gated

    async def scenario():
        first = asyncio.ensure_future(async_engine.embed([[1]], PoolingParams()))
        await asyncio.to_thread(engine.started.wait, 5)
        later = asyncio.gather(
            async_engine.embed([[1, 2], [1, 2, 3]], PoolingParams()), async_engine.embed([[4] * 4], PoolingParams())
        )
        await asyncio.sleep(0.05)
        assert async_engine.stats().num_running_requests == 1 and async_engine.stats().num_waiting_requests == 3
        engine.gate.set()
        return await first, await later

    first, (second, third) = asyncio.run(scenario())
    assert (first, second, third) == ([[1.0]], [[2.0], [3.0]], [[4.0]])
    assert engine.batches == [[[1]], [[1, 2], [1, 2, 3], [4, 4, 4, 4]]]


def test_a_failed_batch_fails_its_callers_and_the_loop_goes_on(gated):
    engine, async_engine = gated
    engine.gate.set()

    async def scenario():
        with pytest.raises(ConfigError, match="prompt 99"):
            await async_engine.embed([[99]], PoolingParams())
        return await async_engine.embed([[5, 5]], PoolingParams())

    assert asyncio.run(scenario()) == [[2.0]]
    assert async_engine.is_running


def test_after_shutdown_requests_get_engine_dead(gated):
    engine, async_engine = gated
    engine.gate.set()
    async_engine.shutdown(timeout=5)
    assert not async_engine.is_running
    with pytest.raises(EngineDeadError):
        asyncio.run(async_engine.embed([[1]], PoolingParams()))


def test_a_cancelled_caller_s_inputs_are_not_embedded(gated):
    engine, async_engine = gated

    async def scenario():
        first = asyncio.ensure_future(async_engine.embed([[1]], PoolingParams()))
        await asyncio.to_thread(engine.started.wait, 5)
        abandoned = asyncio.ensure_future(async_engine.embed([[7, 7, 7]], PoolingParams()))
        await asyncio.sleep(0.05)
        abandoned.cancel()
        await asyncio.sleep(0.05)
        engine.gate.set()
        result = await first
        return result, await async_engine.embed([[2, 2]], PoolingParams())

    assert asyncio.run(scenario()) == ([[1.0]], [[2.0]])
    assert engine.batches == [[[1]], [[2, 2]]]

"""``SamplingParams.output_kind``: cumulative outputs, deltas that add up to them, or the final one only."""

import asyncio
import dataclasses

import pytest

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.engine.llm_engine import LLMEngine
from pagedllm_core.sampling_params import RequestOutputKind, SamplingParams

PARAMS = SamplingParams(n=2, temperature=0.8, seed=3, max_tokens=10, ignore_eos=True, logprobs=1, stop=["the"])


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return LLMEngine(EngineConfig(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32"))


def outputs_of(engine, kind):
    engine.add_request("r", "Once upon a time", dataclasses.replace(PARAMS, output_kind=kind))
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    return outputs


def test_deltas_add_up_to_the_cumulative_output_and_final_only_sends_just_it(engine):
    cumulative = outputs_of(engine, RequestOutputKind.CUMULATIVE)
    deltas = outputs_of(engine, RequestOutputKind.DELTA)
    (final,) = outputs_of(engine, RequestOutputKind.FINAL_ONLY)
    assert len(deltas) == len(cumulative) > 2 and deltas[-1].finished
    assert all(len(delta.outputs[0].token_ids) <= 1 for delta in deltas[1:])  # one new token a step, not all
    merged = deltas[0]
    for delta in deltas[1:]:
        merged.add(delta)
    for reference in (cumulative[-1], final):
        assert [(c.text, c.token_ids, c.finish_reason) for c in merged.outputs] == [
            (c.text, c.token_ids, c.finish_reason) for c in reference.outputs
        ]
        assert [len(c.logprobs) for c in merged.outputs] == [len(c.token_ids) for c in reference.outputs]


def test_a_stream_that_falls_behind_gets_its_missed_deltas_folded_together(engine):
    expected = outputs_of(engine, RequestOutputKind.CUMULATIVE)[-1]

    async def run():
        async_engine = AsyncLLMEngine(engine)
        try:
            params = dataclasses.replace(PARAMS, output_kind=RequestOutputKind.DELTA)
            stream = await async_engine.add_request("slow", "Once upon a time", params)
            await asyncio.sleep(1.0)  # the request finishes while nobody reads
            received = [output async for output in stream]
        finally:
            await asyncio.to_thread(async_engine.shutdown, 10)
        return received

    received = asyncio.run(run())
    merged = received[0]
    for output in received[1:]:
        merged.add(output)
    assert merged.finished
    assert [(c.text, c.token_ids) for c in merged.outputs] == [(c.text, c.token_ids) for c in expected.outputs]

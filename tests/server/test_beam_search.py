"""``use_beam_search`` on both endpoints: the engine's beams, best first, alongside ordinary requests."""

import asyncio

import openai
import pytest

from pagedllm_core import LLM, BeamSearchParams
from tests.server.conftest import MODEL_NAME, wait_until_idle


@pytest.fixture(scope="module")
def offline_beams(tiny_model):
    """The offline API's beams for the same prompt, as the reference."""
    llm = LLM(model=str(tiny_model), max_model_len=256)
    (output,) = llm.beam_search("The quick brown fox", BeamSearchParams(beam_width=3, max_tokens=6, ignore_eos=True))
    tokenizer = llm.get_tokenizer()
    prompt_length = len(tokenizer.encode("The quick brown fox"))
    return [tokenizer.decode(beam.tokens[prompt_length:], skip_special_tokens=True) for beam in output.sequences]


def test_completion_beams_equal_the_offline_beams(client, engine, offline_beams):
    response = client.completions.create(
        model=MODEL_NAME, prompt="The quick brown fox", n=3, max_tokens=6,
        extra_body={"use_beam_search": True, "ignore_eos": True},
    )
    assert [choice.text for choice in sorted(response.choices, key=lambda c: c.index)] == offline_beams
    assert response.usage.completion_tokens == 18
    wait_until_idle(engine)


def test_chat_beam_search_returns_n_choices(client, engine):
    response = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}], n=2, max_completion_tokens=4,
        extra_body={"use_beam_search": True, "length_penalty": 0.5},
    )
    assert len(response.choices) == 2
    assert all(choice.finish_reason in ("stop", "length") for choice in response.choices)
    wait_until_idle(engine)


def test_a_stream_keeps_flowing_while_a_beam_search_runs(server, engine):
    async def run():
        client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        beams = asyncio.ensure_future(client.completions.create(
            model=MODEL_NAME, prompt="Once upon a time", n=4, max_tokens=64,
            extra_body={"use_beam_search": True, "ignore_eos": True},
        ))
        chunks_during_beams = 0
        stream = await client.completions.create(
            model=MODEL_NAME, prompt="Story:", max_tokens=40, stream=True, extra_body={"ignore_eos": True}
        )
        async for chunk in stream:
            chunks_during_beams += bool(chunk.choices and chunk.choices[0].text) and not beams.done()
        return await beams, chunks_during_beams

    beams, chunks_during_beams = asyncio.run(run())
    assert len(beams.choices) == 4 and beams.usage.completion_tokens == 4 * 64
    assert chunks_during_beams >= 20  # the stream was not paused behind the beam search
    wait_until_idle(engine)


def test_a_beam_search_streams_its_beams(client, engine, offline_beams):
    stream = client.completions.create(
        model=MODEL_NAME, prompt="The quick brown fox", n=3, max_tokens=6, stream=True,
        extra_body={"use_beam_search": True, "ignore_eos": True},
    )
    texts = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert [texts[index] for index in sorted(texts)] == offline_beams
    wait_until_idle(engine)


def test_a_client_that_leaves_aborts_its_beam_search(server, engine, monkeypatch):
    import time

    import httpx

    aborted = []
    abort_core_requests = engine.engine.abort_core_requests

    def recording_abort(request_ids):
        outputs = abort_core_requests(request_ids)
        aborted.extend(outputs)
        return outputs

    monkeypatch.setattr(engine.engine, "abort_core_requests", recording_abort)
    body = {
        "model": MODEL_NAME, "prompt": "Hello", "n": 4, "max_tokens": 240, "stream": True,
        "use_beam_search": True, "ignore_eos": True,
    }
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        while not engine.stats().num_running_requests:
            time.sleep(0.001)
    wait_until_idle(engine)  # the beams left the batch: no blocks held, nothing running
    assert [output.beams[0].finish_reason for output in aborted] == ["abort"]

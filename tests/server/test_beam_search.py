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


def test_beam_search_waits_for_running_requests_and_they_still_finish(server, engine):
    async def run():
        client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        ordinary = [
            client.completions.create(model=MODEL_NAME, prompt=f"Story {i}:", max_tokens=20, extra_body={"ignore_eos": True})
            for i in range(4)
        ]
        beams = client.completions.create(
            model=MODEL_NAME, prompt="Hello", n=2, max_tokens=5, extra_body={"use_beam_search": True}
        )
        return await asyncio.gather(*ordinary, beams)

    *ordinary, beams = asyncio.run(run())
    assert all(len(r.choices) == 1 and r.usage.completion_tokens == 20 for r in ordinary)
    assert len(beams.choices) == 2
    wait_until_idle(engine)


def test_streaming_beam_search_is_refused(http):
    response = http.post(
        "/v1/completions",
        json={"model": MODEL_NAME, "prompt": "Hi", "n": 2, "use_beam_search": True, "stream": True},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"
    assert http.get("/health").status_code == 200

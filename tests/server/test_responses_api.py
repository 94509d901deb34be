"""POST /v1/responses through the openai client's ``responses`` methods, with the tiny model."""

from __future__ import annotations

import importlib.util
import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.server.conftest import MODEL_NAME, wait_until_idle
from tests.server.test_errors import assert_error


@pytest.fixture(autouse=True)
def engine_is_idle_after(engine):
    yield
    wait_until_idle(engine)


def test_text_input_with_instructions(client, http):
    response = client.responses.create(
        model=MODEL_NAME, input="Hi", instructions="Be terse.", max_output_tokens=6, temperature=0
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 6 and response.instructions == "Be terse."
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text == message.content[0].text
    # The same conversation as a chat: instructions are the system message.
    chat = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        max_tokens=6, temperature=0,
    )
    assert chat.choices[0].message.content == response.output_text
    assert chat.usage.prompt_tokens == response.usage.input_tokens


def test_message_list_input(client):
    response = client.responses.create(
        model=MODEL_NAME,
        input=[
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
            {"role": "user", "content": "Again"},
        ],
        max_output_tokens=4,
    )
    assert response.status in ("completed", "incomplete") and response.usage.input_tokens > 10


def test_stream_events_in_order_and_equal_to_the_whole(client):
    request = dict(model=MODEL_NAME, input="Tell me a story.", max_output_tokens=12, temperature=0)
    whole = client.responses.create(**request)
    with client.responses.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"
    ]
    assert types[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(event.delta for event in events if event.type == "response.output_text.delta") == whole.output_text
    assert final.output_text == whole.output_text and final.usage.output_tokens == whole.usage.output_tokens


guided = pytest.mark.skipif(
    importlib.util.find_spec("pagedllm_guided_json") is None,
    reason="text.format json_schema needs the guided plugin",
)


class City(BaseModel):
    name: str = Field(max_length=10)
    population: int


@guided
def test_text_format_json_schema_through_parse(client):
    response = client.responses.parse(
        model=MODEL_NAME, input="A city as JSON.", text_format=City, max_output_tokens=100, temperature=1.0
    )
    assert isinstance(response.output_parsed, City)
    raw = client.responses.create(
        model=MODEL_NAME, input="Any JSON object.", text={"format": {"type": "json_object"}}, max_output_tokens=100
    )
    if raw.status == "completed":
        jsonschema.validate(json.loads(raw.output_text), {"type": "object"})


BAD = {
    "no-input": ({}, "input"),
    "empty-input": ({"input": []}, "input"),
    "image-part": ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input"),
    "zero-max-output-tokens": ({"input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
    "tools": ({"input": "Hi", "tools": [{"type": "function", "name": "f"}]}, "tools"),
    "previous-response": ({"input": "Hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    "schema-missing": ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
    "unknown-model": ({"input": "Hi", "model": "gpt-5"}, "model"),
}


@pytest.mark.parametrize("body, param", BAD.values(), ids=BAD.keys())
def test_bad_requests(http, body, param):
    error = assert_error(http.post("/v1/responses", json=body), 404 if param == "model" else 400)
    assert error["param"] == param


def test_input_over_the_context(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL_NAME, input="hi " * 300)
    assert caught.value.code == "context_length_exceeded"

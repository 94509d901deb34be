"""Structured outputs through the server: OpenAI's response_format, vLLM's fields, errors, LangChain."""

from __future__ import annotations

import json
import re
import time

import jsonschema
import pytest
from pydantic import BaseModel, Field

from pagedllm_core import StructuredOutputsParams
from tests.server.conftest import MODEL_NAME, wait_until_idle
from tests.server.test_errors import assert_error

pytest.importorskip(
    "pagedllm_guided_json", reason="the guided plugin is not installed (pip install 'pagedllm[guided]')"
)

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 8},
        "population": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["big", "old", "wet"]}, "maxItems": 2},
    },
    "required": ["city", "population"],
}
MESSAGES = [{"role": "user", "content": "Describe a city as JSON."}]
JSON_SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}


@pytest.fixture(autouse=True)
def engine_is_idle_after(engine):
    yield
    wait_until_idle(engine)


def test_chat_response_format_json_schema_validates(client):
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        response_format=JSON_SCHEMA_FORMAT,
        n=2,
        temperature=1.0,
        seed=1,
        max_tokens=200,
    )
    for choice in response.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)


def test_streamed_chat_json_schema_validates(client):
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        response_format=JSON_SCHEMA_FORMAT,
        temperature=0,
        max_tokens=200,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_on_completions(client, engine):
    # Random weights seldom close a string by chance; a bias on '"' and '}' makes the object end soon.
    bias = {str(token): 20 for token in engine.tokenizer.convert_tokens_to_ids(['"', "}"])}
    response = client.completions.create(
        model=MODEL_NAME,
        prompt="A JSON object:",
        max_tokens=100,
        temperature=0,
        logit_bias=bias,
        extra_body={"response_format": {"type": "json_object"}},
    )
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].text), dict)


@pytest.mark.parametrize(
    "extra_body, check",
    [
        ({"structured_outputs": {"regex": r"[a-z]{3}-\d{3}"}}, lambda text: re.fullmatch(r"[a-z]{3}-\d{3}", text)),
        ({"structured_outputs": {"choice": ["left", "right"]}}, lambda text: text in ("left", "right")),
        ({"guided_regex": r"(ab)+c"}, lambda text: re.fullmatch(r"(ab)+c", text)),
        ({"guided_choice": ["yes", "no"]}, lambda text: text in ("yes", "no")),
        ({"guided_json": SCHEMA}, lambda text: jsonschema.validate(json.loads(text), SCHEMA) is None),
        ({"structured_outputs": {"json": SCHEMA}}, lambda text: jsonschema.validate(json.loads(text), SCHEMA) is None),
    ],
    ids=["structured-regex", "structured-choice", "guided-regex", "guided-choice", "guided-json", "structured-json"],
)
def test_vllm_fields_on_completions(client, extra_body, check):
    response = client.completions.create(
        model=MODEL_NAME, prompt="Answer:", max_tokens=200, temperature=1.0, n=3, seed=4, extra_body=extra_body
    )
    for choice in response.choices:
        assert check(choice.text), choice.text


def test_beam_search_with_a_choice(http):
    body = {
        "prompt": "Pick:",
        "n": 2,
        "use_beam_search": True,
        "max_tokens": 10,
        "guided_choice": ["alpha", "beta", "gamma"],
    }
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert {choice["text"] for choice in response.json()["choices"]} <= {"alpha", "beta", "gamma"}


@pytest.mark.parametrize(
    "extra, reason",
    [
        ({"guided_json": {"type": "tuple"}}, "invalid or unsupported JSON schema: Unsupported type: tuple"),
        ({"guided_regex": "(unclosed"}, "invalid regex '(unclosed': missing )"),
        (
            {"structured_outputs": {"grammar": "root ::= x"}},
            "structured_outputs.grammar: Extra inputs are not permitted",
        ),
    ],
)
def test_invalid_specs_are_400s_with_the_reason(http, extra, reason):
    error = assert_error(http.post("/v1/completions", json={"prompt": "Hi", **extra}), 400)
    assert reason in error["message"]


def test_a_slow_compile_is_a_clear_error_while_other_requests_keep_flowing(http, engine, monkeypatch):
    compiler = engine.engine.constraint_compiler
    monkeypatch.setattr(compiler, "timeout", 0.2)
    slow = StructuredOutputsParams(regex="[ab]*a[ab]{15}")  # a DFA of ~2**15 states: seconds to compile
    error = assert_error(http.post("/v1/completions", json={"prompt": "Hi", "guided_regex": slow.regex}), 400)
    assert "within 0.2 s" in error["message"]
    # The compile is killed with its worker process; meanwhile the engine still serves.
    quick = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})
    assert quick.status_code == 200
    deadline = time.monotonic() + 120
    while compiler.compiling(slow):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert not compiler.cached(slow)
    # Given the time, the same spec compiles (in a fresh worker) and then costs nothing.
    monkeypatch.setattr(compiler, "timeout", 120.0)
    again = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 30, "guided_regex": slow.regex})
    assert again.status_code == 200, again.text
    assert compiler.cached(slow)


class City(BaseModel):
    name: str = Field(max_length=8)
    population: int


def test_openai_client_parse_with_a_pydantic_model(client):
    completion = client.chat.completions.parse(
        model=MODEL_NAME, messages=MESSAGES, response_format=City, temperature=0, max_tokens=100
    )
    assert isinstance(completion.choices[0].message.parsed, City)


def test_langchain_with_structured_output_json_schema(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        base_url=f"{server.base_url}/v1",
        api_key="unused",
        model=MODEL_NAME,
        temperature=0,
        max_tokens=100,
        max_retries=0,
    )
    structured = chat.with_structured_output(City, method="json_schema")
    city = structured.invoke("Describe a city.")
    assert isinstance(city, City)

"""Structured outputs on the default model (SmolLM2-135M-Instruct): real prompts, real schemas."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from pagedllm_core import LLM, SamplingParams, StructuredOutputsParams

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "email": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
        "hobbies": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "email"],
}
REVIEW = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number"},
        "summary": {"type": "string"},
        "details": {
            "type": "object",
            "properties": {
                "pros": {"type": "array", "items": {"type": "string"}},
                "cons": {"type": ["string", "null"]},
            },
        },
    },
    "required": ["sentiment", "score"],
}
DATE = r"\d{4}-\d{2}-\d{2}"
CAPITALS = ["Paris", "Berlin", "Madrid", "Rome"]


@pytest.fixture(scope="module")
def llm():
    return LLM(max_model_len=1024)


def test_default_model_outputs_match_schemas_regexes_and_choices(llm):
    cases = [
        ("Invent a person and describe them as JSON.", StructuredOutputsParams(json=PERSON)),
        ("Review this phone as JSON: great screen, weak battery.", StructuredOutputsParams(json=REVIEW)),
        ("When did the Berlin Wall fall? Answer with a date.", StructuredOutputsParams(regex=DATE)),
        ("What is the capital of France?", StructuredOutputsParams(choice=CAPITALS)),
    ]
    conversations = [[{"role": "user", "content": prompt}] for prompt, _ in cases]
    params = [SamplingParams(temperature=0, max_tokens=160, structured_outputs=spec) for _, spec in cases]
    person, review, date, capital = (output.outputs[0] for output in llm.chat(conversations, params, use_tqdm=False))
    for completion in (person, review, date, capital):
        assert completion.finish_reason == "stop", completion.text
    jsonschema.validate(json.loads(person.text), PERSON)
    jsonschema.validate(json.loads(review.text), REVIEW)
    assert re.fullmatch(DATE, date.text)
    assert capital.text in CAPITALS

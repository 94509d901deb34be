"""``StructuredOutputsParams``: one constraint per request, schemas normalised to plain dicts."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from pagedllm_core import SamplingParams, StructuredOutputsParams
from pagedllm_core.errors import ConfigError


class Person(BaseModel):
    name: str
    age: int


def test_a_pydantic_model_class_becomes_its_json_schema():
    spec = StructuredOutputsParams(json=Person)
    assert spec.kind == "json"
    assert spec.json == Person.model_json_schema()


def test_a_json_string_becomes_a_dict_with_the_same_cache_key():
    as_text = StructuredOutputsParams(json='{"type": "object", "required": ["a"]}')
    as_dict = StructuredOutputsParams(json={"required": ["a"], "type": "object"})
    assert as_text.json == as_dict.json and as_text.cache_key() == as_dict.cache_key()
    assert as_text.cache_key() != StructuredOutputsParams(regex="a").cache_key()


@pytest.mark.parametrize(
    "values, message",
    [
        ({}, "exactly one of json, json_object, regex, choice; got none"),
        ({"regex": "a", "choice": ["a"]}, "got regex, choice"),
        ({"json": "{not json"}, "structured_outputs.json is not valid JSON"),
        ({"json": [1, 2]}, "must be a JSON schema"),
        ({"choice": []}, "non-empty list of strings"),
        ({"choice": "yes"}, "non-empty list of strings"),
        ({"choice": ["a", 1]}, "non-empty list of strings"),
        ({"regex": 5}, "regex must be a string"),
    ],
)
def test_invalid_params_name_the_problem(values, message):
    with pytest.raises(ConfigError, match=message):
        StructuredOutputsParams(**values)


def test_sampling_params_take_only_structured_outputs_params():
    with pytest.raises(ConfigError, match="structured_outputs must be a StructuredOutputsParams, got dict"):
        SamplingParams(structured_outputs={"regex": "a"})

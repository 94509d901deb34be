"""instructor over the openai client against ``pagedllm serve``, in JSON-schema and TOOLS modes."""

from __future__ import annotations

import openai
import pytest
from pydantic import BaseModel, Field

instructor = pytest.importorskip("instructor")


class Country(BaseModel):
    """A country and its capital."""

    name: str = Field(max_length=30)
    capital: str = Field(max_length=30)


@pytest.mark.parametrize("mode", [instructor.Mode.JSON_SCHEMA, instructor.Mode.TOOLS], ids=["json-schema", "tools"])
def test_response_model(served, mode):
    client = instructor.from_openai(
        openai.OpenAI(base_url=served.base_url, api_key="sk-local", max_retries=0), mode=mode
    )
    country = client.chat.completions.create(
        model=served.model,
        response_model=Country,
        messages=[{"role": "user", "content": "Give the name and capital of France."}],
        max_tokens=100,
        temperature=0,
        max_retries=0,
    )
    assert isinstance(country, Country)

"""The request fields that ask for structured output, as OpenAI and vLLM clients send them.

- OpenAI: ``response_format`` ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``
  or ``{"type": "json_object"}`` (``{"type": "text"}`` is unconstrained).
- vLLM: ``structured_outputs`` ``{"json" | "regex" | "choice" | "json_object": ...}``, and the older
  ``guided_json``, ``guided_regex`` and ``guided_choice`` fields.

A request may use one of them; each becomes the same ``StructuredOutputsParams``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pagedllm_core.errors import ConfigError
from pagedllm_core.server.errors import InvalidRequestError
from pagedllm_core.structured_outputs import StructuredOutputsParams


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: a named schema; ``strict`` is accepted (outputs always match)."""

    model_config = ConfigDict(populate_by_name=True)

    name: str | None = None
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputsRequest(BaseModel):
    """vLLM's ``structured_outputs`` request field; unknown keys are rejected rather than ignored,
    since ignoring one would silently return unconstrained output."""

    model_config = ConfigDict(extra="forbid")

    json_schema: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    json_object: bool | None = None


class StructuredOutputFields(BaseModel):
    """The structured-output fields of completion and chat requests."""

    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsRequest | None = Field(
        None, description='vLLM: {"json": schema} | {"regex": str} | {"choice": [str]} | {"json_object": true}.'
    )
    guided_json: dict[str, Any] | str | None = Field(None, description="Older vLLM name of structured_outputs.json.")
    guided_regex: str | None = Field(None, description="Older vLLM name of structured_outputs.regex.")
    guided_choice: list[str] | None = Field(None, description="Older vLLM name of structured_outputs.choice.")

    def structured_outputs_params(self) -> StructuredOutputsParams | None:
        """The one constraint this request asks for, or None; a 400 if it asks for several or a bad one."""
        requested = self._requested()
        if len(requested) > 1:
            names = ", ".join(param for param, _ in requested)
            raise InvalidRequestError(f"give at most one structured-output field; got {names}", param=requested[1][0])
        if not requested:
            return None
        param, values = requested[0]
        try:
            return StructuredOutputsParams(**values)
        except ConfigError as error:
            raise InvalidRequestError(str(error), param=param) from None

    def _requested(self) -> list[tuple[str, dict[str, Any]]]:
        """(field, ``StructuredOutputsParams`` keywords) for every structured-output field that is set."""
        requested = [
            ("guided_json", {"json": self.guided_json}),
            ("guided_regex", {"regex": self.guided_regex}),
            ("guided_choice", {"choice": self.guided_choice}),
        ]
        requested = [(param, values) for param, values in requested if next(iter(values.values())) is not None]
        if self.structured_outputs is not None:
            fields = self.structured_outputs
            values = {"json": fields.json_schema, "regex": fields.regex, "choice": fields.choice}
            values = {name: value for name, value in values.items() if value is not None}
            if fields.json_object:
                values["json_object"] = True
            requested.append(("structured_outputs", values))
        if self.response_format is not None and self.response_format.type != "text":
            requested.append(("response_format", self._response_format_values(self.response_format)))
        return requested

    @staticmethod
    def _response_format_values(response_format: ResponseFormat) -> dict[str, Any]:
        if response_format.type == "json_object":
            return {"json_object": True}
        if response_format.json_schema is None or response_format.json_schema.json_schema is None:
            raise InvalidRequestError(
                "response_format of type 'json_schema' needs json_schema.schema", param="response_format"
            )
        return {"json": response_format.json_schema.json_schema}

"""The ``POST /v1/responses`` request: input (text or messages), instructions and output settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pagedllm_core.errors import ConfigError
from pagedllm_core.sampling_params import SamplingParams
from pagedllm_core.server.errors import InvalidRequestError, UnsupportedParameterError
from pagedllm_core.server.protocol import ChatMessage
from pagedllm_core.structured_outputs import StructuredOutputsParams

TEXT_PART_TYPES = ("input_text", "output_text", "text")


class InputTextPart(BaseModel):
    """A part of an input message's content; only text parts are supported."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class InputMessage(BaseModel):
    """A message of ``input``; items without a ``type`` are messages too, as in OpenAI's API."""

    model_config = ConfigDict(extra="allow")

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputTextPart]

    @field_validator("content")
    @classmethod
    def _text_only(cls, content):
        if isinstance(content, list):
            for part in content:
                if part.type not in TEXT_PART_TYPES or part.text is None:
                    raise ValueError(f"only text content parts are supported, got type {part.type!r}")
        return content

    def chat_message(self) -> ChatMessage:
        content = self.content if isinstance(self.content, str) else "\n".join(part.text for part in self.content)
        return ChatMessage(role=self.role, content=content)


class TextFormat(BaseModel):
    """``text.format``: plain text, any JSON object, or JSON matching a named schema."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextSettings(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat = Field(default_factory=TextFormat)


class ResponsesRequest(BaseModel):
    """``POST /v1/responses``. Responses are not stored: ``store`` is accepted and
    ``previous_response_id`` is refused."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="A served model name; omitted means the first one.")
    input: str | list[InputMessage] = Field(description="A user message as text, or a list of messages.")
    instructions: str | None = Field(None, description="A system message put before the input.")
    max_output_tokens: int | None = Field(None, ge=1, description="Most tokens to generate; default: fill the context.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, description="vLLM extension: makes sampling reproducible.")
    stream: bool = Field(False, description="Answer as server-sent events (response.created ... response.completed).")
    text: TextSettings = Field(default_factory=TextSettings)
    tools: list[dict[str, Any]] | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    store: bool | None = Field(None, description="Accepted; this server keeps no responses.")
    metadata: dict[str, str] | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        return value

    def check_supported(self) -> None:
        if self.tools:
            raise UnsupportedParameterError("tools", "tools in the Responses API (use /v1/chat/completions)")
        if self.previous_response_id is not None:
            raise UnsupportedParameterError("previous_response_id", "previous_response_id (responses are not stored)")
        if self.background:
            raise UnsupportedParameterError("background", "background responses")

    def messages(self) -> list[ChatMessage]:
        """The conversation to render: the instructions as a system message, then the input."""
        if isinstance(self.input, str):
            messages = [ChatMessage(role="user", content=self.input)]
        else:
            messages = [item.chat_message() for item in self.input]
        if self.instructions is not None:
            messages.insert(0, ChatMessage(role="system", content=self.instructions))
        return messages

    def to_sampling_params(self) -> SamplingParams:
        """The engine's sampling settings for this request; a 400 for a bad value."""
        self.check_supported()
        values: dict[str, Any] = {"max_tokens": self.max_output_tokens}
        for name in ("temperature", "top_p", "seed"):
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        values["structured_outputs"] = self._structured_outputs()
        return SamplingParams(**values)

    def _structured_outputs(self) -> StructuredOutputsParams | None:
        text_format = self.text.format
        try:
            if text_format.type == "json_object":
                return StructuredOutputsParams(json_object=True)
            if text_format.type == "json_schema":
                if text_format.json_schema is None:
                    raise InvalidRequestError("text.format of type 'json_schema' needs a schema", param="text.format")
                return StructuredOutputsParams(json=text_format.json_schema)
        except ConfigError as error:
            raise InvalidRequestError(str(error), param="text.format") from None
        return None

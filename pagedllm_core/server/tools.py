"""The tool fields of a chat request (``tools``, ``tool_choice``) and what they ask of the output.

``tool_choice`` decides how the output is read:

- ``"none"``: as text; the tools are still shown to the chat template (as vLLM does).
- ``"auto"`` (the default with tools): the server's ``--tool-call-parser`` finds calls in the text;
  needs ``--enable-auto-tool-choice``, as in vLLM.
- ``"required"``: structured outputs hold the output to a JSON array of calls to the given tools.
- ``{"type": "function", "function": {"name": N}}``: structured outputs hold it to ``N``'s arguments.
"""

from __future__ import annotations

from typing import Any, Literal

from jsonschema import Draft202012Validator, SchemaError
from pydantic import BaseModel, Field, field_validator, model_validator

from pagedllm_core.server.errors import InvalidRequestError
from pagedllm_core.server.settings import ServerSettings
from pagedllm_core.server.tool_calls import ToolCallReader
from pagedllm_core.server.tool_parsers import ToolParser, get_tool_parser
from pagedllm_core.server.tool_parsers.forced import NamedFunctionCall, RequiredToolCalls

# A function without parameters takes an empty object.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class FunctionDefinition(BaseModel):
    """A function the model may call; ``parameters`` is a JSON schema of its arguments object."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$", description="Letters, digits, _ and -; at most 64.")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = Field(None, description="Accepted; forced calls always match the schema.")

    @field_validator("parameters")
    @classmethod
    def _a_json_schema(cls, parameters):
        if parameters is not None:
            try:
                Draft202012Validator.check_schema(parameters)
            except SchemaError as error:
                raise ValueError(f"not a valid JSON schema: {error.message}") from None
        return parameters

    def parameters_schema(self) -> dict[str, Any]:
        return self.parameters or NO_PARAMETERS


class FunctionTool(BaseModel):
    """An entry of ``tools``."""

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming the one function to call."""

    type: Literal["function"]
    function: FunctionName


class ToolFields(BaseModel):
    """The tool-calling fields of a chat request."""

    tools: list[FunctionTool] | None = Field(None, description="Functions the model may call.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description='"none", "auto" (the default with tools), "required" or {"type": "function", ...}.'
    )
    parallel_tool_calls: bool | None = Field(None, description="false: at most one call (with 'required').")

    @model_validator(mode="after")
    def _choice_needs_tools(self):
        if not self.tools and self.tool_choice not in (None, "none", "auto"):
            raise ValueError("tool_choice 'required' or a named function needs 'tools'")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = [tool.function.name for tool in self.tools]
            if self.tool_choice.function.name not in names:
                raise ValueError(
                    f"tool_choice names {self.tool_choice.function.name!r}, which is not among the tools "
                    f"({', '.join(names)})"
                )
        return self

    @property
    def effective_tool_choice(self) -> str | NamedToolChoice:
        """The choice that applies: without tools there is nothing to call ("auto" included)."""
        if not self.tools:
            return "none"
        return self.tool_choice or "auto"

    def template_tools(self) -> list[dict[str, Any]] | None:
        """The tools as chat templates take them (``tools`` variable), or None."""
        if not self.tools:
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]

    def forced_tool_schema(self) -> dict[str, Any] | None:
        """The JSON schema a forced tool choice holds the output to, or None when nothing is forced."""
        choice = self.effective_tool_choice
        if isinstance(choice, NamedToolChoice):
            return next(
                tool.function.parameters_schema() for tool in self.tools if tool.function.name == choice.function.name
            )
        if choice != "required":
            return None
        calls = [
            {
                "properties": {
                    "name": {"type": "string", "enum": [tool.function.name]},
                    "parameters": tool.function.parameters_schema(),
                },
                "required": ["name", "parameters"],
            }
            for tool in self.tools
        ]
        schema = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": calls}}
        if self.parallel_tool_calls is False:
            schema["maxItems"] = 1
        return schema

    def tool_call_reader(self, settings: ServerSettings) -> ToolCallReader | None:
        """How to read tool calls out of this request's outputs, or None to leave them as text."""
        choice = self.effective_tool_choice
        parser: ToolParser
        if choice == "none":
            return None
        if choice == "required":
            parser = RequiredToolCalls()
        elif isinstance(choice, NamedToolChoice):
            parser = NamedFunctionCall(choice.function.name)
        elif settings.enable_auto_tool_choice and settings.tool_call_parser is not None:
            parser = get_tool_parser(settings.tool_call_parser)
        else:
            raise InvalidRequestError(
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set; '
                'or send tool_choice "none", "required" or a named function',
                param="tool_choice",
            )
        return ToolCallReader(parser)

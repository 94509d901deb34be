"""The outputs of forced tool choices, which structured outputs hold to a JSON schema.

- ``tool_choice: "required"``: a JSON array of ``{"name": ..., "parameters": {...}}``, one per call.
- ``tool_choice: {"type": "function", "function": {"name": N}}``: the arguments object of ``N`` alone.
"""

from __future__ import annotations

from pagedllm_core.server.tool_parsers.base import (
    FunctionCall,
    SectionCalls,
    ToolParser,
    decode_json,
    parse_json_array_calls,
    skip_whitespace,
)


class RequiredToolCalls(ToolParser):
    """Reads the JSON array ``tool_choice: "required"`` constrains the output to."""

    name = "required"

    def section_start(self, text: str) -> int | None:
        return 0

    def undecided_length(self, text: str) -> int:
        return 0

    def parse_section(self, section: str, final: bool) -> SectionCalls:
        position = skip_whitespace(section, 0)
        if not section.startswith("[", position):
            return SectionCalls([], 0)
        return parse_json_array_calls(section, position + 1)


class NamedFunctionCall(ToolParser):
    """Reads the arguments object a named ``tool_choice`` constrains the output to."""

    name = "named"

    def __init__(self, function_name: str):
        self.function_name = function_name

    def section_start(self, text: str) -> int | None:
        return 0

    def undecided_length(self, text: str) -> int:
        return 0

    def parse_section(self, section: str, final: bool) -> SectionCalls:
        decoded = decode_json(section, 0) if final else None
        call = None if decoded is None else FunctionCall.of(self.function_name, decoded[0])
        if call is None or section[decoded[1] :].strip():
            return SectionCalls([], 0)
        return SectionCalls([call], len(section))

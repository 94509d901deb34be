"""Llama 3.x JSON tool calls: the reply is ``{"name": ..., "parameters": {...}}`` (several joined by ``;``),
optionally after ``<|python_tag|>``."""

from __future__ import annotations

from pagedllm_core.server.tool_parsers.base import FunctionCall, SectionCalls, ToolParser, decode_call, skip_whitespace

PYTHON_TAG = "<|python_tag|>"


class Llama3JsonToolParser(ToolParser):
    """Llama 3.1 / 3.2 / 3.3 with JSON-based tool calling; only a reply that *starts* with the call counts."""

    name = "llama3_json"
    needs_special_tokens = True

    def section_start(self, text: str) -> int | None:
        stripped = text.lstrip()
        if stripped.startswith(PYTHON_TAG) or stripped.startswith("{"):
            return len(text) - len(stripped)
        return None

    def undecided_length(self, text: str) -> int:
        stripped = text.lstrip()
        return len(text) if PYTHON_TAG.startswith(stripped) else 0

    def parse_section(self, section: str, final: bool) -> SectionCalls:
        calls: list[FunctionCall] = []
        position = len(PYTHON_TAG) if section.startswith(PYTHON_TAG) else 0
        end = 0
        while (decoded := decode_call(section, position)) is not None:
            call, position = decoded
            calls.append(call)
            end = position
            position = skip_whitespace(section, position)
            if not section.startswith(";", position):
                break
            position += 1
        return SectionCalls(calls, end)

"""Hermes / Qwen: each call is ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``."""

from __future__ import annotations

from pagedllm_core.server.tool_parsers.base import (
    FunctionCall,
    SectionCalls,
    ToolParser,
    decode_call,
    marker_prefix_length,
    skip_whitespace,
)

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


class HermesToolParser(ToolParser):
    """Hermes 2 Pro, Qwen 2.5 / 3 and other ChatML models trained on the Hermes function-calling format.

    A last block missing its closing tag is accepted once the output has ended (a model that stops
    right after the JSON).
    """

    name = "hermes"

    def section_start(self, text: str) -> int | None:
        start = text.find(OPEN)
        return None if start < 0 else start

    def undecided_length(self, text: str) -> int:
        return marker_prefix_length(text, OPEN)

    def parse_section(self, section: str, final: bool) -> SectionCalls:
        calls: list[FunctionCall] = []
        end = 0
        while section.startswith(OPEN, position := skip_whitespace(section, end)):
            decoded = decode_call(section, position + len(OPEN))
            if decoded is None:
                break
            call, position = decoded
            position = skip_whitespace(section, position)
            if section.startswith(CLOSE, position):
                position += len(CLOSE)
            elif not (final and position == len(section)):
                break
            calls.append(call)
            end = position
        return SectionCalls(calls, end)

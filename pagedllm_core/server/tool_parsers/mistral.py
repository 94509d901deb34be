"""Mistral: ``[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]``, or in newer tokenizers
``[TOOL_CALLS]name[ARGS]{...}`` once per call."""

from __future__ import annotations

import secrets
import string

from pagedllm_core.server.tool_parsers.base import (
    FunctionCall,
    SectionCalls,
    ToolParser,
    decode_json,
    marker_prefix_length,
    parse_json_array_calls,
    skip_whitespace,
)

MARKER = "[TOOL_CALLS]"
ARGS = "[ARGS]"
_ID_ALPHABET = string.ascii_letters + string.digits


class MistralToolParser(ToolParser):
    """Mistral 7B Instruct v0.3, Mistral Small / Nemo and other models using ``[TOOL_CALLS]``.

    Call ids are nine letters and digits, the only form Mistral's chat templates accept back.
    """

    name = "mistral"
    needs_special_tokens = True

    def section_start(self, text: str) -> int | None:
        start = text.find(MARKER)
        return None if start < 0 else start

    def undecided_length(self, text: str) -> int:
        return marker_prefix_length(text, MARKER)

    def new_call_id(self) -> str:
        return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))

    def parse_section(self, section: str, final: bool) -> SectionCalls:
        position = skip_whitespace(section, len(MARKER))
        if section.startswith("[", position):
            return parse_json_array_calls(section, position + 1)
        return self._parse_named(section)

    @staticmethod
    def _parse_named(section: str) -> SectionCalls:
        calls: list[FunctionCall] = []
        end = 0
        position = 0
        while section.startswith(MARKER, position):
            name_end = section.find(ARGS, position)
            if name_end < 0:
                break
            decoded = decode_json(section, name_end + len(ARGS))
            call = None if decoded is None else FunctionCall.of(section[position + len(MARKER) : name_end].strip(), decoded[0])
            if call is None:
                break
            calls.append(call)
            end = position = decoded[1]
        return SectionCalls(calls, end)

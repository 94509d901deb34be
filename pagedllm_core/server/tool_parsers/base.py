"""What every tool-call parser shares: the parsed call, the section split and JSON decoding helpers."""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class FunctionCall:
    """One call the model asked for: the function's name and its arguments as a JSON text."""

    name: str
    arguments: str

    @classmethod
    def of(cls, name: Any, arguments: Any) -> FunctionCall | None:
        """A call from decoded JSON, or None when the name is not a string or the arguments not an object.

        Arguments given as a JSON string holding an object (some models quote them) are accepted.
        """
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if arguments is None:
            arguments = {}
        if not isinstance(name, str) or not name or not isinstance(arguments, dict):
            return None
        return cls(name, json.dumps(arguments, ensure_ascii=False))


@dataclass(frozen=True)
class SectionCalls:
    """The calls found at the start of a tool-call section, and where parsing stopped in it."""

    calls: list[FunctionCall]
    end: int


@dataclass(frozen=True)
class ParsedOutput:
    """A whole model output split into its text and its tool calls (none when nothing parsed)."""

    content: str | None
    calls: list[FunctionCall]


class ToolParser(ABC):
    """Finds tool calls in what one model family writes.

    A model's output is text, then optionally a *tool-call section* that starts where
    :meth:`section_start` says. :meth:`parse_section` reads the calls at the start of a section
    (for a partial section: those already complete), so the same code serves a whole response
    and a stream. Output that does not parse is left as text, never an error.
    """

    name: ClassVar[str]
    # Markers like [TOOL_CALLS] or <|python_tag|> are special tokens, dropped unless kept.
    needs_special_tokens: ClassVar[bool] = False

    @abstractmethod
    def section_start(self, text: str) -> int | None:
        """Where the tool-call section begins in ``text``, or None if it has not begun."""

    @abstractmethod
    def undecided_length(self, text: str) -> int:
        """How many characters at the end of ``text`` might still turn out to begin a section
        (a stream holds them back until it knows)."""

    @abstractmethod
    def parse_section(self, section: str, final: bool) -> SectionCalls:
        """The calls at the start of ``section``; ``final`` when no more text will come."""

    def new_call_id(self) -> str:
        return f"call_{uuid.uuid4().hex[:24]}"

    def parse(self, text: str) -> ParsedOutput:
        """Split a finished output into content and calls; with no call parsed it is all content."""
        start = self.section_start(text)
        if start is None:
            return ParsedOutput(text, [])
        section = self.parse_section(text[start:], final=True)
        if not section.calls:
            return ParsedOutput(text, [])
        content = (text[:start] + text[start + section.end :]).strip()
        return ParsedOutput(content or None, section.calls)


def marker_prefix_length(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that is a proper beginning of ``marker``."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-length:]):
            return length
    return 0


def decode_json(text: str, position: int) -> tuple[Any, int] | None:
    """The JSON value starting at ``position`` (after any whitespace) and where it ends, or None."""
    position = skip_whitespace(text, position)
    try:
        return _DECODER.raw_decode(text, position)
    except json.JSONDecodeError:
        return None


def decode_call(text: str, position: int) -> tuple[FunctionCall, int] | None:
    """The ``{"name": ..., "arguments" | "parameters": {...}}`` object starting at ``position`` as a
    call, and where it ends; None if it is not one (or not complete yet)."""
    decoded = decode_json(text, position)
    if decoded is None or not isinstance(decoded[0], dict):
        return None
    value, end = decoded
    call = FunctionCall.of(value.get("name"), value.get("arguments", value.get("parameters")))
    return None if call is None else (call, end)


def skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def parse_json_array_calls(section: str, position: int) -> SectionCalls:
    """Calls from the objects of a JSON array whose ``[`` is just before ``position``; a partial
    array gives the objects complete so far."""
    calls: list[FunctionCall] = []
    end = 0
    while (decoded := decode_call(section, position)) is not None:
        call, position = decoded
        calls.append(call)
        end = position
        position = skip_whitespace(section, position)
        if section.startswith("]", position):
            end = position + 1
            break
        if not section.startswith(",", position):
            break
        position += 1
    return SectionCalls(calls, end)

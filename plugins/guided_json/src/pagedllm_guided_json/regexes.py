"""Each kind of structured-output spec as the regular expression outlines-core compiles."""

from __future__ import annotations

import json
import re

from outlines_core.json_schema import BOOLEAN, NULL, NUMBER, STRING, WHITESPACE, build_regex_from_schema

from pagedllm_core.sampling.constraints import StructuredOutputError
from pagedllm_core.structured_outputs import StructuredOutputsParams

# How deep ``json_object`` outputs may nest. A regex can only express bounded nesting, and the
# automaton grows about fourfold per level: depth 2 compiles in seconds, 3 takes minutes.
JSON_OBJECT_DEPTH = 2


# Rust's ASCII class names for the shorthand escapes.
_ASCII_CLASS_NAMES = {"d": "digit", "w": "word", "s": "space"}


def spec_regex(spec: StructuredOutputsParams) -> str:
    """The regex whose full matches are exactly the outputs ``spec`` allows."""
    if spec.json is not None:
        return ascii_shorthand_classes(schema_regex(spec.json))
    if spec.json_object:
        return json_object_regex(JSON_OBJECT_DEPTH)
    if spec.choice is not None:
        return "(" + "|".join(re.escape(choice) for choice in spec.choice) + ")"
    check_regex_syntax(spec.regex)
    return ascii_shorthand_classes(spec.regex)


def ascii_shorthand_classes(regex: str) -> str:
    r"""``regex`` with ``\d``, ``\w``, ``\s`` (and ``\D``, ``\W``, ``\S``) meaning ASCII classes.

    outlines-core parses Rust regex syntax, where these are Unicode classes (``\d`` matches
    ``🯸``); JSON Schema's dialect and vLLM mean ``[0-9]``, ``[0-9A-Za-z_]`` and ``[\t\n\v\f\r ]``.
    Each becomes Rust's ASCII class (``[[:digit:]]``, or ``[:digit:]`` inside a bracket class).
    """
    out: list[str] = []
    depth = 0  # how deep inside bracket classes (Rust allows nested ones)
    i = 0
    while i < len(regex):
        character = regex[i]
        if character == "\\" and i + 1 < len(regex):
            escaped = regex[i + 1]
            name = _ASCII_CLASS_NAMES.get(escaped.lower())
            if name is None:
                out.append(regex[i : i + 2])
            else:
                item = f"[:{'^' if escaped.isupper() else ''}{name}:]"
                out.append(item if depth else f"[{item}]")
            i += 2
        elif character == "[" and depth and regex.startswith("[:", i) and ":]" in regex[i:]:
            end = regex.index(":]", i) + 2  # an ASCII class already: copy it whole
            out.append(regex[i:end])
            i = end
        elif character == "[":
            depth += 1
            opening = "[^" if regex.startswith("[^", i) else "["
            i += len(opening)
            if regex.startswith("]", i):  # a "]" first in a class is a literal
                opening += "]"
                i += 1
            out.append(opening)
        else:
            if character == "]" and depth:
                depth -= 1
            out.append(character)
            i += 1
    return "".join(out)


def schema_regex(schema: dict) -> str:
    try:
        return build_regex_from_schema(json.dumps(schema))
    except (ValueError, TypeError) as error:
        raise StructuredOutputError(f"invalid or unsupported JSON schema: {error}") from None


def json_object_regex(depth: int) -> str:
    """Any JSON object whose values nest at most ``depth - 1`` further objects or arrays."""
    return _object_regex(_value_regex(depth - 1))


def _value_regex(depth: int) -> str:
    scalar = f"({STRING}|{NUMBER}|{BOOLEAN}|{NULL})"
    if depth == 0:
        return scalar
    inner = _value_regex(depth - 1)
    return f"({scalar}|{_object_regex(inner)}|{_array_regex(inner)})"


def _object_regex(value: str) -> str:
    member = f"{STRING}{WHITESPACE}:{WHITESPACE}{value}"
    return rf"\{{{WHITESPACE}({member}({WHITESPACE},{WHITESPACE}{member})*)?{WHITESPACE}\}}"


def _array_regex(value: str) -> str:
    return rf"\[{WHITESPACE}({value}({WHITESPACE},{WHITESPACE}{value})*)?{WHITESPACE}\]"


def check_regex_syntax(regex: str) -> None:
    """Reject a malformed regex with the parser's reason (outlines-core's own message does not say)."""
    try:
        re.compile(regex)
    except re.error as error:
        raise StructuredOutputError(f"invalid regex {regex!r}: {error}") from None

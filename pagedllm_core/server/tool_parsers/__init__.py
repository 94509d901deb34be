"""Tool-call parsers by model family, chosen with ``--tool-call-parser`` (vLLM's names)."""

from __future__ import annotations

from pagedllm_core.errors import ConfigError
from pagedllm_core.server.tool_parsers.base import FunctionCall, ParsedOutput, SectionCalls, ToolParser
from pagedllm_core.server.tool_parsers.hermes import HermesToolParser
from pagedllm_core.server.tool_parsers.llama3_json import Llama3JsonToolParser
from pagedllm_core.server.tool_parsers.mistral import MistralToolParser

TOOL_PARSERS: dict[str, type[ToolParser]] = {
    parser.name: parser for parser in (HermesToolParser, Llama3JsonToolParser, MistralToolParser)
}


def check_tool_parser_name(name: str) -> str:
    """``name`` if a parser has it, else a ConfigError listing the names there are."""
    if name not in TOOL_PARSERS:
        raise ConfigError(f"--tool-call-parser: unknown parser {name!r}; choose one of {', '.join(TOOL_PARSERS)}")
    return name


def get_tool_parser(name: str) -> ToolParser:
    return TOOL_PARSERS[check_tool_parser_name(name)]()


__all__ = [
    "TOOL_PARSERS",
    "FunctionCall",
    "ParsedOutput",
    "SectionCalls",
    "ToolParser",
    "check_tool_parser_name",
    "get_tool_parser",
]

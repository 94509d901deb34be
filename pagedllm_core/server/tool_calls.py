"""Tool calls read out of a chat choice's text: whole for a response, or piece by piece for a stream."""

from __future__ import annotations

from dataclasses import dataclass, field

from pagedllm_core.server.responses import FunctionCallBody, FunctionCallDelta, ToolCall, ToolCallDelta
from pagedllm_core.server.tool_parsers import FunctionCall, ToolParser
from pagedllm_core.server.tool_parsers.forced import NamedFunctionCall


@dataclass
class ChoiceMessage:
    """What an assistant message says: text, tool calls, or both."""

    content: str | None
    tool_calls: list[ToolCall]

    def finish_reason(self, engine_reason: str | None) -> str | None:
        """OpenAI's reason: ``tool_calls`` for a choice that ended by itself with calls in it."""
        return "tool_calls" if self.tool_calls and engine_reason == "stop" else engine_reason


@dataclass
class StreamPiece:
    """What one step of a streamed choice adds."""

    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


class ToolCallReader:
    """Reads the outputs of one request with ``parser``: whole messages, or streams of pieces."""

    def __init__(self, parser: ToolParser):
        self.parser = parser

    def message(self, text: str) -> ChoiceMessage:
        parsed = self.parser.parse(text)
        return ChoiceMessage(parsed.content, [self._tool_call(call) for call in parsed.calls])

    def stream(self) -> ToolCallStream:
        """A reader for one streamed choice."""
        if isinstance(self.parser, NamedFunctionCall):
            return NamedArgumentsStream(self.parser)
        return ToolCallStream(self.parser)

    def _tool_call(self, call: FunctionCall) -> ToolCall:
        return ToolCall(id=self.parser.new_call_id(), function=FunctionCallBody(name=call.name, arguments=call.arguments))


class ToolCallStream:
    """One streamed choice: sends text as content until a tool-call section begins, then each call
    in one piece (id, name and arguments) once it is complete.

    A chunk holds at most one piece per call: the openai client's stream accumulator would drop a
    second piece with the same index in the chunk that opens a call.

    Text that might begin a section is held back until it is clear; a section that never parses
    is sent as content when the choice ends.
    """

    def __init__(self, parser: ToolParser):
        self.parser = parser
        self.num_content_chars = 0  # of the text, sent as content so far
        self.section_start: int | None = None
        self.num_calls = 0

    @property
    def called(self) -> bool:
        return self.num_calls > 0

    def feed(self, text: str, final: bool) -> StreamPiece:
        """The piece to send now, given the choice's whole ``text`` so far."""
        if self.section_start is None:
            self.section_start = self.parser.section_start(text)
        if self.section_start is None:
            held_back = 0 if final else self.parser.undecided_length(text)
            return StreamPiece(content=self._content_up_to(text, len(text) - held_back))
        content = self._content_up_to(text, self.section_start)
        section = text[self.section_start :]
        found = self.parser.parse_section(section, final)
        pieces = [self._call_piece(call) for call in found.calls[self.num_calls :]]
        if final:
            rest = section[found.end :] if found.calls else section
            if rest.strip():
                content += rest
        return StreamPiece(content, pieces)

    def _content_up_to(self, text: str, end: int) -> str:
        content = text[self.num_content_chars : end]
        self.num_content_chars = max(self.num_content_chars, end)
        return content

    def _call_piece(self, call: FunctionCall) -> ToolCallDelta:
        self.num_calls += 1
        return ToolCallDelta(
            index=self.num_calls - 1,
            id=self.parser.new_call_id(),
            type="function",
            function=FunctionCallDelta(name=call.name, arguments=call.arguments),
        )


class NamedArgumentsStream(ToolCallStream):
    """A named ``tool_choice``: the whole output is the one call's arguments, so they are sent as
    they are generated; the first piece also carries the call's id and name."""

    parser: NamedFunctionCall

    def feed(self, text: str, final: bool) -> StreamPiece:
        arguments = text[self.num_content_chars :]
        self.num_content_chars = len(text)
        if self.called:
            if not arguments:
                return StreamPiece()
            return StreamPiece(tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments=arguments))])
        self.num_calls = 1
        opening = ToolCallDelta(
            index=0,
            id=self.parser.new_call_id(),
            type="function",
            function=FunctionCallDelta(name=self.parser.function_name, arguments=arguments),
        )
        return StreamPiece(tool_calls=[opening])

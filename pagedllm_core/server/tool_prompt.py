"""Tools for chat templates that ignore them: the conversation is rewritten in the Hermes format.

A template that never mentions ``tools`` (SmolLM2's, plain ChatML, Llama 2's) would drop the tool
definitions, fail on an assistant message whose ``content`` is null and may reject the ``tool``
role. For such a template the definitions go into the system message, each assistant tool call
becomes a ``<tool_call>`` block of its text and each tool result a user message holding a
``<tool_response>`` block, which the ``hermes`` parser reads back.
"""

from __future__ import annotations

import json
from typing import Any

TOOLS_SYSTEM_PROMPT = """\
You can call functions to help with the user's request. These are the functions, one JSON object per line:
<tools>
{tools}
</tools>
To call a function, answer with its name and a JSON object of its arguments inside <tool_call></tool_call> tags:
<tool_call>
{{"name": "function name", "arguments": {{"argument name": "value"}}}}
</tool_call>"""


def template_reads_tools(template: str | dict | None) -> bool:
    """Whether a chat template (or any of a tokenizer's named templates) uses the ``tools`` variable."""
    templates = template.values() if isinstance(template, dict) else [template or ""]
    return any("tools" in text for text in templates)


def fold_tools_into_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The conversation with tool definitions, calls and results written into plain text messages."""
    folded = [_fold_message(message) for message in messages]
    if not tools:
        return folded
    prompt = TOOLS_SYSTEM_PROMPT.format(tools="\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools))
    if folded and folded[0]["role"] == "system":
        return [{**folded[0], "content": f"{folded[0]['content']}\n\n{prompt}"}, *folded[1:]]
    return [{"role": "system", "content": prompt}, *folded]


def _fold_message(message: dict[str, Any]) -> dict[str, Any]:
    if message["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message['content']}\n</tool_response>"}
    if message["role"] == "assistant" and message.get("tool_calls"):
        blocks = [
            "<tool_call>\n"
            + json.dumps({"name": call["function"]["name"], "arguments": call["function"]["arguments"]}, ensure_ascii=False)
            + "\n</tool_call>"
            for call in message["tool_calls"]
        ]
        return {"role": "assistant", "content": "\n".join([message.get("content") or "", *blocks]).strip()}
    return message

"""OpenAI request bodies as pydantic models; each owns its conversion to ``SamplingParams``.

Field names follow OpenAI, plus vLLM's extensions (``top_k``, ``min_p``, ``ignore_eos``,
``stop_token_ids``, ...). A field left out (or null) keeps ``SamplingParams``' default, so the
server and the offline ``LLM`` behave alike. Unknown fields are accepted and ignored, as OpenAI's
newer clients may send fields this server has never heard of; known features the server cannot
honour are rejected with a 400 naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pagedllm_core.sampling_params import (
    INT64_MAX,
    LENGTH_PENALTY_RANGE,
    REPETITION_PENALTY_RANGE,
    BeamSearchParams,
    SamplingParams,
)
from pagedllm_core.server.errors import ContextLengthExceededError, InvalidRequestError, UnsupportedParameterError
from pagedllm_core.server.responses import ToolCall
from pagedllm_core.server.settings import ServerLimits
from pagedllm_core.server.structured_outputs import StructuredOutputFields
from pagedllm_core.server.tools import ToolFields
from pagedllm_core.structured_outputs import StructuredOutputsParams

# A token id as a request may carry one: the engine checks it against the vocabulary, the edge
# keeps it within the int64 the engine's tensors hold.
TokenId = Annotated[int, Field(ge=0, le=INT64_MAX)]

# Request fields passed to SamplingParams under the same name when the client sets them.
SAMPLING_FIELDS = (
    "n",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "min_tokens",
    "ignore_eos",
    "include_stop_str_in_output",
    "skip_special_tokens",
    "cache_salt",
)


# The chat_template_kwargs a request may set, with the type each takes: the switches chat templates
# read. Anything else (return_tensors, tools, chat_template, tokenize...) would reach
# apply_chat_template itself, so it is refused.
CHAT_TEMPLATE_KWARGS: dict[str, type] = {
    "add_generation_prompt": bool,
    "continue_final_message": bool,
    "enable_thinking": bool,
    "thinking": bool,
    "reasoning_effort": str,
}


class StreamOptions(BaseModel):
    """``stream_options``: whether to end the stream with (or attach to every chunk) a usage report."""

    include_usage: bool = Field(False, description="Send a last chunk with 'usage' and no choices.")
    continuous_usage_stats: bool = Field(False, description="vLLM extension: 'usage' on every chunk.")


class GenerationRequest(StructuredOutputFields):
    """Fields shared by completion and chat requests (structured-output ones included)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="A served model name; omitted means the first one.")
    n: int = Field(1, ge=1, le=INT64_MAX, description="How many choices to return.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy; default 1.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass; default 1 (off).")
    seed: int | None = Field(None, ge=0, le=INT64_MAX, description="Makes sampling reproducible for this request.")
    stop: str | list[str] | None = Field(None, description="Strings that end generation (not included).")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[TokenId, float] | None = Field(None, description="Token id -> bias in [-100, 100].")
    stream: bool | None = Field(False, description="Answer as server-sent events ending with 'data: [DONE]'.")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="An end-user id; accepted and not used.")
    # vLLM extensions
    top_k: int | None = Field(
        None, ge=-1, le=INT64_MAX, description="Keep the k most likely tokens (at most the vocabulary); 0 or -1 is off."
    )
    min_p: float | None = Field(None, ge=0, le=1, description="Drop tokens below min_p times the top probability.")
    repetition_penalty: float | None = Field(
        None,
        ge=REPETITION_PENALTY_RANGE[0],
        le=REPETITION_PENALTY_RANGE[1],
        description="1 is off; above 1 discourages repeats.",
    )
    min_tokens: int | None = Field(
        None, ge=0, le=INT64_MAX, description="Generate at least this many tokens before stopping."
    )
    ignore_eos: bool | None = Field(None, description="Keep generating past the end-of-sequence token.")
    stop_token_ids: list[TokenId] | None = Field(None, description="Token ids that end generation.")
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None
    use_beam_search: bool = Field(
        False, description="Beam search with n beams, returned best first (streamed as one chunk per beam when it ends)."
    )
    return_tokens_as_token_ids: bool | None = Field(
        None, description="Name logprob tokens 'token_id:<id>' instead of their text."
    )
    length_penalty: float = Field(
        1.0,
        ge=LENGTH_PENALTY_RANGE[0],
        le=LENGTH_PENALTY_RANGE[1],
        description="With use_beam_search: rank by cum_logprob / length ** this.",
    )
    cache_salt: str | None = Field(
        None, min_length=1, description="Only requests with the same salt share prefix-cached KV blocks."
    )

    logprobs_field: ClassVar[str] = "logprobs"  # the field that asks for top logprobs

    def sampling_values(self) -> dict[str, Any]:
        """The ``SamplingParams`` keywords this request sets (subclasses add theirs)."""
        values = {name: getattr(self, name) for name in SAMPLING_FIELDS if getattr(self, name) is not None}
        values["structured_outputs"] = self.structured_outputs_params()
        return values

    def to_sampling_params(self, limits: ServerLimits) -> SamplingParams:
        """Check the request against the server's limits and build its ``SamplingParams``.

        Raises :class:`InvalidRequestError` (or the ``ConfigError`` of ``SamplingParams``), both 400s.
        """
        self.check_supported()
        self.check_num_prompts(limits)
        values = self.sampling_values()
        for name in ("n", "best_of"):
            if values.get(name, 1) > limits.max_n:
                raise InvalidRequestError(f"{name} must be at most {limits.max_n} on this server", param=name)
        if values.get("logprobs", 0) > limits.max_logprobs:
            raise InvalidRequestError(
                f"at most {limits.max_logprobs} logprobs per token are allowed on this server",
                param=self.logprobs_field,
            )
        return SamplingParams(**values)

    def check_supported(self) -> None:
        """Raise :class:`UnsupportedParameterError` for features this server does not implement."""

    def check_num_prompts(self, limits: ServerLimits) -> None:
        """A 400 for more prompts than ``--max-prompts-per-request``."""
        num_prompts = self.num_prompts()
        if num_prompts > limits.max_prompts_per_request:
            raise InvalidRequestError(
                f"at most {limits.max_prompts_per_request} prompts per request are allowed on this server "
                f"(--max-prompts-per-request); got {num_prompts}",
                param="prompt",
            )

    def num_prompts(self) -> int:
        return 1

    def max_new_tokens(self) -> int | None:
        """The requested output length (None: fill the context)."""
        return self.max_tokens

    def beam_search_params_per_prompt(
        self, limits: ServerLimits, max_model_len: int, prompts: list[list[int]]
    ) -> list[BeamSearchParams]:
        """One beam search per prompt, each bounded by the context its prompt leaves."""
        for ids in prompts:
            ContextLengthExceededError.check(max_model_len, len(ids), self.max_new_tokens())
        return [self.to_beam_search_params(limits, max_model_len - len(ids)) for ids in prompts]

    def to_beam_search_params(self, limits: ServerLimits, room: int) -> BeamSearchParams:
        """Beam search settings for a prompt leaving ``room`` tokens of context; ``n`` is the beam width."""
        self.check_supported()
        self.check_num_prompts(limits)
        if self.n > limits.max_n:
            raise InvalidRequestError(f"n must be at most {limits.max_n} on this server", param="n")
        if getattr(self, self.logprobs_field) is not None:
            raise UnsupportedParameterError(self.logprobs_field, "logprobs with use_beam_search")
        max_tokens = self.max_new_tokens() or room
        if max_tokens > room:
            raise InvalidRequestError(
                f"the prompt leaves room for {room} tokens of context but max_tokens is {max_tokens}", param="max_tokens"
            )
        return BeamSearchParams(
            beam_width=self.n,
            max_tokens=max_tokens,
            ignore_eos=bool(self.ignore_eos),
            temperature=self.temperature or 0.0,
            length_penalty=self.length_penalty,
            structured_outputs=self.structured_outputs_params(),
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and (self.stream_options.include_usage or self.continuous_usage))

    @property
    def continuous_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.continuous_usage_stats)


class CompletionRequest(GenerationRequest):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[TokenId] | list[list[TokenId]] = Field(
        description="A string, a list of strings, a list of token ids, or a list of token-id lists."
    )
    max_tokens: int | None = Field(16, ge=1, le=INT64_MAX, description="Most tokens to generate; null fills the context.")
    echo: bool | None = Field(False, description="Prepend the prompt to each choice's text.")
    logprobs: int | None = Field(None, ge=0, le=INT64_MAX, description="Return this many most likely tokens per position.")
    best_of: int | None = Field(None, ge=1, le=INT64_MAX, description="Generate best_of, return the n most likely.")
    suffix: str | None = Field(None, description="Not supported (insertion).")

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, prompt):
        if isinstance(prompt, list) and (not prompt or any(isinstance(p, list) and not p for p in prompt)):
            raise ValueError("prompt lists must not be empty")
        return prompt

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)

    def num_prompts(self) -> int:
        return len(self.prompts())

    def sampling_values(self) -> dict[str, Any]:
        values = super().sampling_values()
        values["max_tokens"] = self.max_tokens
        for name in ("logprobs", "best_of"):
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return values

    def check_supported(self) -> None:
        if self.suffix:
            raise UnsupportedParameterError("suffix", "suffix (text insertion)")
        if self.echo and self.logprobs is not None:
            raise UnsupportedParameterError("logprobs", "logprobs together with echo (prompt logprobs)")
        if self.stream and self.best_of is not None and self.best_of > self.n:
            raise InvalidRequestError("best_of greater than n cannot be streamed", param="best_of")


class TextContentPart(BaseModel):
    """A text part of a message's content."""

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message of a conversation; ``developer`` is treated as ``system``.

    An assistant message may carry ``tool_calls`` (its ``content`` then may be null); a ``tool``
    message answers the call named by its ``tool_call_id``.
    """

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, content):
        if isinstance(content, list):
            for part in content:
                if part.type != "text" or part.text is None:
                    raise ValueError(f"only text content parts are supported, got type {part.type!r}")
        return content

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content may only be null in an assistant message with tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    def template_dict(self) -> dict[str, Any]:
        """The message as chat templates expect it (tool call arguments as objects, as HF templates read them)."""
        content = self.content
        if isinstance(content, list):
            content = "\n".join(part.text for part in content)
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [_template_tool_call(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


def _template_tool_call(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.function.arguments)
    except json.JSONDecodeError:
        arguments = call.function.arguments
    return {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": arguments}}


class ChatCompletionRequest(GenerationRequest, ToolFields):
    """``POST /v1/chat/completions``."""

    logprobs_field: ClassVar[str] = "top_logprobs"

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=INT64_MAX, description="Deprecated by OpenAI for max_completion_tokens.")
    max_completion_tokens: int | None = Field(
        None, ge=1, le=INT64_MAX, description="Most tokens to generate; default: fill the context."
    )
    logprobs: bool | None = Field(False, description="Return the log-probability of each generated token.")
    top_logprobs: int | None = Field(
        None, ge=0, le=INT64_MAX, description="With logprobs: this many most likely tokens per position."
    )
    functions: list[dict[str, Any]] | None = Field(None, description="Not supported: OpenAI's older name; use tools.")
    # vLLM extensions
    add_generation_prompt: bool = Field(True, description="End the prompt with the assistant's turn header.")
    continue_final_message: bool = Field(False, description="Continue the last (assistant) message instead.")
    chat_template_kwargs: dict[str, Any] | None = Field(
        None,
        description="Variables for the chat template, one of: " + ", ".join(CHAT_TEMPLATE_KWARGS) + ". "
        "add_generation_prompt and continue_final_message given here win over the top-level fields.",
    )
    chat_template: str | None = Field(None, description="Not accepted: start the server with --chat-template.")

    @field_validator("chat_template_kwargs")
    @classmethod
    def _allowed_template_kwargs(cls, kwargs):
        for name, value in (kwargs or {}).items():
            expected = CHAT_TEMPLATE_KWARGS.get(name)
            if expected is None:
                raise ValueError(f"{name!r} is not allowed; allowed keys: {', '.join(CHAT_TEMPLATE_KWARGS)}")
            if not isinstance(value, expected):
                # A ValueError, which pydantic reports as a 400 naming the field (a TypeError would escape it).
                raise ValueError(f"{name!r} must be a {expected.__name__}, got {type(value).__name__}")  # noqa: TRY004
        return kwargs

    def chat_template_options(self) -> tuple[bool, bool, dict[str, Any]]:
        """``(add_generation_prompt, continue_final_message, other template variables)``."""
        kwargs = dict(self.chat_template_kwargs or {})
        add_generation_prompt = kwargs.pop("add_generation_prompt", self.add_generation_prompt)
        continue_final_message = kwargs.pop("continue_final_message", self.continue_final_message)
        return add_generation_prompt, continue_final_message, kwargs

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def sampling_values(self) -> dict[str, Any]:
        values = super().sampling_values()
        values["max_tokens"] = self.max_new_tokens()
        if self.logprobs:
            values["logprobs"] = self.top_logprobs or 0
        return values

    def structured_outputs_params(self) -> StructuredOutputsParams | None:
        """A forced tool choice's schema, or the structured-output field's constraint."""
        schema = self.forced_tool_schema()
        if schema is None:
            return super().structured_outputs_params()
        if self._requested():
            raise InvalidRequestError(
                "a tool_choice of 'required' or a named function cannot be combined with response_format or "
                "structured_outputs",
                param="tool_choice",
            )
        return StructuredOutputsParams(json=schema)

    def check_supported(self) -> None:
        if self.functions:
            raise UnsupportedParameterError("functions", "'functions' (use 'tools')")
        if self.chat_template is not None:
            raise UnsupportedParameterError("chat_template", "a per-request chat_template")
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs set to true", param="top_logprobs")
        add_generation_prompt, continue_final_message, _ = self.chat_template_options()
        if continue_final_message and add_generation_prompt:
            raise InvalidRequestError(
                "continue_final_message needs add_generation_prompt set to false", param="continue_final_message"
            )


class TokenizeRequest(BaseModel):
    """``POST /tokenize``: a prompt, or messages rendered with the chat template."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = Field(True, description="For a prompt: add the tokenizer's BOS etc.")
    add_generation_prompt: bool = Field(True, description="For messages: end with the assistant header.")

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' and 'messages'")
        return self


class DetokenizeRequest(BaseModel):
    """``POST /detokenize``."""

    model: str | None = None
    tokens: list[TokenId]

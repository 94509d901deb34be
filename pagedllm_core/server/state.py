"""The server's shared state: the engine, its settings and metrics, and tokenizer work off the loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.server.admission import InFlightRequests
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.server.errors import InvalidRequestError, ModelNotFoundError
from pagedllm_core.server.lora_modules import ServedLoRAs
from pagedllm_core.server.metrics import ServerMetrics
from pagedllm_core.server.protocol import ChatMessage
from pagedllm_core.server.settings import ServerSettings
from pagedllm_core.server.tool_prompt import fold_tools_into_messages, template_reads_tools


@dataclass
class Prompt:
    """A prompt as the engine gets it, with its text when the response needs it (echo)."""

    token_ids: list[int]
    text: str | None = None


@dataclass
class ServerState:
    """What every route handler works with; one per app, reached through :func:`server_state`.

    Tokenizer calls run in worker threads so that a long prompt never stalls the event loop (and
    never touches the engine's step thread).
    """

    engine: AsyncLLMEngine
    settings: ServerSettings
    metrics: ServerMetrics
    in_flight: InFlightRequests
    loras: ServedLoRAs = field(default_factory=ServedLoRAs)

    @property
    def model_name(self) -> str:
        return self.settings.served_model_names[0]

    def check_model(self, model: str | None) -> str:
        """The model name to report for a request's ``model`` (a served name or LoRA adapter); 404 otherwise."""
        if model is None:
            return self.model_name
        self.lora_request(model)
        return model

    def lora_request(self, model: str) -> LoRARequest | None:
        """The LoRA adapter a request's ``model`` names, None for the base model; 404 for a name not served
        (now: an adapter may have been unloaded since the name was checked)."""
        if model in self.settings.served_model_names:
            return None
        lora_request = self.loras.get(model)
        if lora_request is None:
            adapters = [lora.lora_name for lora in self.loras.all()]
            raise ModelNotFoundError(model, [*self.settings.served_model_names, *adapters])
        return lora_request

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        tokenizer = self.engine.tokenizer
        return await asyncio.to_thread(tokenizer.encode, text, add_special_tokens=add_special_tokens)

    async def decode(self, token_ids: list[int]) -> str:
        num_tokens = len(self.engine.tokenizer)
        bad = [token for token in token_ids if not 0 <= token < num_tokens]
        if bad:
            raise InvalidRequestError(f"token ids must be in [0, {num_tokens}); got {bad[:5]}", param="tokens")
        return await asyncio.to_thread(self.engine.tokenizer.decode, token_ids)

    async def prompt_of(self, prompt: str | list[int], with_text: bool) -> Prompt:
        """Token ids for a completion prompt, and its text if ``with_text``."""
        if isinstance(prompt, str):
            return Prompt(await self.encode(prompt), prompt)
        return Prompt(list(prompt), await self.decode(prompt) if with_text else None)

    async def render_chat(
        self,
        messages: list[ChatMessage],
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: dict | None = None,
        tools: list[dict] | None = None,
    ) -> list[int]:
        """Token ids of a conversation rendered with ``--chat-template`` or the tokenizer's template.

        ``tools`` go to the template's ``tools`` variable; for a template without one, they and the
        conversation's tool calls are written into the messages (see ``tool_prompt``).
        """
        tokenizer = self.engine.tokenizer
        template = self.settings.chat_template
        if template is None and not getattr(tokenizer, "chat_template", None):
            raise InvalidRequestError(
                "this model's tokenizer has no chat template; use /v1/completions, or start the server "
                "with --chat-template FILE"
            )
        conversation = [message.template_dict() for message in messages]
        if not template_reads_tools(template or tokenizer.chat_template):
            conversation, tools = fold_tools_into_messages(conversation, tools), None

        def render() -> list[int]:
            return list(
                tokenizer.apply_chat_template(
                    conversation,
                    tools=tools,
                    chat_template=template,
                    add_generation_prompt=add_generation_prompt,
                    continue_final_message=continue_final_message,
                    tokenize=True,
                    return_dict=False,
                    **(template_kwargs or {}),
                )
            )

        try:
            return await asyncio.to_thread(render)
        except Exception as error:  # jinja's TemplateError, or a template's raise_exception(...)
            raise InvalidRequestError(f"the chat template could not render these messages: {error}") from error


def server_state(request: Request) -> ServerState:
    """FastAPI dependency: the app's :class:`ServerState`."""
    return request.app.state.server


# What route handlers declare to receive the state: ``server: Server``.
Server = Annotated[ServerState, Depends(server_state)]

"""What the HTTP server is configured with, apart from the engine: names, key, template, limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pagedllm_core.server.lora_modules import LoRAModulePath
from pagedllm_core.server.routing import RoutingPolicyName
from pagedllm_core.server.tool_parsers import check_tool_parser_name


class ServerLimits(BaseModel):
    """Bounds on what one request may ask for; requests beyond them get a 400 (or 413, 504)."""

    model_config = ConfigDict(frozen=True)

    max_request_body_bytes: int = Field(8 << 20, ge=1, description="Largest request body accepted (413 beyond).")
    max_n: int = Field(16, ge=1, description="Largest n (and best_of) one request may ask for.")
    max_logprobs: int = Field(20, ge=0, description="Largest logprobs / top_logprobs one request may ask for.")
    request_timeout: float | None = Field(
        600.0, gt=0, description="Seconds a request may take before it is aborted (504); None for no limit."
    )
    max_prompts_per_request: int = Field(
        256, ge=1, description="Most prompts one completions request may carry (400 beyond)."
    )
    max_num_waiting_requests: int | None = Field(
        512,
        ge=1,
        description="Most engine requests held outside the running batch; beyond it new requests get 429 with "
        "Retry-After. None for no limit.",
    )


class ServerSettings(BaseModel):
    """Everything ``build_app`` needs besides the engine."""

    model_config = ConfigDict(frozen=True)

    served_model_names: list[str] = Field(
        min_length=1, description="Names clients may pass as 'model'; the first is the one reported."
    )
    model_source: str = Field(description="Where the model came from (path or Hub id), shown as 'root'.")
    api_key: str | None = Field(None, description="When set, /v1 and tokenizer routes need 'Bearer <key>'.")
    chat_template: str | None = Field(None, description="Jinja chat template replacing the tokenizer's.")
    limits: ServerLimits = Field(default_factory=ServerLimits)
    task: Literal["generate", "embed"] = Field(
        "generate", description="What the engine serves: generation routes, or /v1/embeddings."
    )
    tool_call_parser: str | None = Field(
        None, description="How tool calls are read from outputs with tool_choice 'auto' (hermes, llama3_json, mistral)."
    )
    enable_auto_tool_choice: bool = Field(False, description="Allow tool_choice 'auto'; needs tool_call_parser.")
    enable_api_docs: bool = Field(
        False, description="Serve /docs, /redoc and /openapi.json (behind the API key when one is set)."
    )
    lora_modules: list[LoRAModulePath] = Field(
        default_factory=list, description="LoRA adapters loaded at start-up, each served under its name as 'model'."
    )
    allow_runtime_lora_updating: bool = Field(
        False, description="Mount /v1/load_lora_adapter and /v1/unload_lora_adapter (behind the API key)."
    )
    data_parallel_size: int = Field(
        1, ge=1, description="Engine replicas behind the endpoint, each with its worker in its own process."
    )
    data_parallel_routing: RoutingPolicyName = Field(
        "prefix_aware",
        description="How requests are spread over the replicas: prefix_aware (a shared first KV block goes to one "
        "replica, shorter prompts to the least loaded) or round_robin.",
    )

    @field_validator("tool_call_parser")
    @classmethod
    def _known_parser(cls, name):
        return name if name is None else check_tool_parser_name(name)

    @model_validator(mode="after")
    def _auto_needs_parser(self):
        if self.enable_auto_tool_choice and self.tool_call_parser is None:
            raise ValueError("--enable-auto-tool-choice needs --tool-call-parser")
        return self

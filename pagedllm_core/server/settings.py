"""What the HTTP server is configured with, apart from the engine: names, key, template, limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
    enable_api_docs: bool = Field(
        False, description="Serve /docs, /redoc and /openapi.json (behind the API key when one is set)."
    )

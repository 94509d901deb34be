"""Typed HTTP errors and the handlers that render every failure in OpenAI's error shape.

Every error body is ``{"error": {"message", "type", "param", "code"}}``, which the ``openai``
client turns into its ``BadRequestError``, ``AuthenticationError``, ``NotFoundError``, ...
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from pagedllm_core.engine.async_engine import EngineDeadError
from pagedllm_core.errors import ConfigError
from pagedllm_core.server.request_context import current_request_id

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error answered with ``status_code`` and an OpenAI error body."""

    status_code = 500
    error_type = "internal_server_error"

    headers: dict[str, str] | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequestError(APIError):
    """The request is malformed or asks for values outside what is allowed (400)."""

    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedParameterError(InvalidRequestError):
    """The request uses an OpenAI feature this server does not implement (400)."""

    def __init__(self, param: str, what: str):
        super().__init__(f"{what} is not supported by this server", param=param, code="unsupported_parameter")


class ContextLengthExceededError(InvalidRequestError):
    """The prompt, or the prompt plus ``max_tokens``, does not fit the model's context (400).

    The wording and code are vLLM's and OpenAI's, which clients match to tell this apart from other
    400s (litellm's ``ContextWindowExceededError``, LangChain's context-overflow handling).
    """

    def __init__(self, max_model_len: int, num_prompt_tokens: int, max_tokens: int | None):
        if max_tokens is None or num_prompt_tokens >= max_model_len:
            message = (
                f"This model's maximum context length is {max_model_len} tokens. However, your request has "
                f"{num_prompt_tokens} input tokens. Please reduce the length of the input messages."
            )
        else:
            message = (
                f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum context "
                f"length is {max_model_len} tokens and your request has {num_prompt_tokens} input tokens "
                f"({max_tokens} > {max_model_len} - {num_prompt_tokens})."
            )
        super().__init__(message, code="context_length_exceeded")

    @classmethod
    def check(cls, max_model_len: int, num_prompt_tokens: int, max_tokens: int | None) -> None:
        """Raise unless the prompt leaves room for ``max_tokens`` (None: at least one) generated tokens."""
        if num_prompt_tokens + (max_tokens or 1) > max_model_len:
            raise cls(max_model_len, num_prompt_tokens, max_tokens)


class AuthenticationError(APIError):
    """The Bearer API key is missing or wrong (401)."""

    status_code = 401
    error_type = "invalid_request_error"

    def __init__(self):
        super().__init__(
            "missing or incorrect API key: send 'Authorization: Bearer <key>' with the key the server was started with",
            code="invalid_api_key",
        )


class ModelNotFoundError(APIError):
    """The request names a model this server does not serve (404)."""

    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, model: str, served: list[str]):
        super().__init__(
            f"the model {model!r} does not exist; this server serves {', '.join(map(repr, served))}",
            param="model",
            code="model_not_found",
        )


class RequestTooLargeError(APIError):
    """The request body is over the server's limit (413)."""

    status_code = 413
    error_type = "invalid_request_error"

    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than the server's limit of {limit} bytes", code="request_too_large")


class RequestTimeoutError(APIError):
    """Generation ran past the server's request timeout (504); the request was aborted."""

    status_code = 504
    error_type = "timeout_error"

    def __init__(self, timeout: float):
        super().__init__(f"the request did not finish within the server's timeout of {timeout:g} seconds")


class ClientDisconnectedError(APIError):
    """The client closed the connection before its response was ready (nobody reads this answer)."""

    status_code = 499
    error_type = "client_closed_request"


class EngineUnavailableError(APIError):
    """The engine loop has stopped, so nothing can be generated (503)."""

    status_code = 503
    error_type = "service_unavailable"


class TooManyRequestsError(APIError):
    """The server's queue is full (``--max-num-waiting-requests``); retry after ``Retry-After`` seconds (429)."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, limit: int, retry_after_seconds: int = 1):
        super().__init__(
            f"the server is at its limit of {limit} waiting requests (--max-num-waiting-requests); retry later",
            code="too_many_requests",
        )
        self.headers = {"Retry-After": str(retry_after_seconds)}


class ServerShuttingDownError(EngineUnavailableError):
    """The server is draining for shutdown and takes no new requests (503)."""

    def __init__(self):
        super().__init__("the server is shutting down and accepts no new requests", code="shutting_down")


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def as_api_error(error: Exception) -> APIError:
    """The :class:`APIError` a failure during generation is reported as (also mid-stream)."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, ConfigError):
        return InvalidRequestError(str(error))
    if isinstance(error, EngineDeadError):
        return EngineUnavailableError(str(error))
    request_id = current_request_id()
    logger.error("unexpected error while serving request %s", request_id, exc_info=error)
    # The exception's text stays in the log: it may show paths, internals or other requests' data.
    return APIError(f"internal server error; the server log has the details under request id {request_id}")


async def send_api_error(send, error: APIError, headers: dict[str, str] | None = None) -> None:
    """Answer with ``error`` from a pure ASGI middleware (before the app has started a response)."""
    payload = json.dumps(error.body()).encode()
    all_headers = {"content-type": "application/json", "content-length": str(len(payload))}
    all_headers.update(error.headers or {})
    all_headers.update(headers or {})
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in all_headers.items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app can raise answer in OpenAI's shape."""

    async def api_error(_: Request, error: Exception) -> JSONResponse:
        api_error = as_api_error(error)
        return JSONResponse(api_error.body(), status_code=api_error.status_code, headers=api_error.headers)

    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {}
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}"
            return JSONResponse(error_body(message, "invalid_request_error"), status_code=400)
        by_field: dict[str, list[str]] = {}
        for problem in problems:
            messages = by_field.setdefault(_location(problem["loc"]) or "body", [])
            message = problem["msg"].removeprefix("Value error, ")
            if message not in messages:
                messages.append(message)
        text = "; ".join(f"{field}: {' or '.join(messages)}" for field, messages in by_field.items())
        param = _location(first.get("loc", ())) or None
        return JSONResponse(error_body(text, "invalid_request_error", param), status_code=400)

    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        error_type = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            error_body(str(error.detail), error_type), status_code=error.status_code, headers=error.headers
        )

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(ConfigError, api_error)
    app.add_exception_handler(EngineDeadError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, api_error)


# Pydantic puts the member type of a union into error locations ("prompt.list[int]"); drop it.
_UNION_MEMBER_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _location(loc: tuple | list) -> str:
    parts = [
        str(part)
        for part in loc
        if part != "body" and not (isinstance(part, str) and ("[" in part or part in _UNION_MEMBER_TAGS))
    ]
    return ".".join(parts)

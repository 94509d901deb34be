"""Which routes a server answers for its task: generation routes, or ``/v1/embeddings``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from pagedllm_core.server.errors import InvalidRequestError
from pagedllm_core.server.state import Server

# The flag that starts a server for each task, for the error message.
_HOW_TO_SERVE = {
    "generate": "serve a generative model (--task generate)",
    "embed": "serve an embedding model, or a decoder with --task embed",
}


def require_task(task: str) -> Callable[..., Awaitable[None]]:
    """A route dependency answering 400 when the served model runs another task."""

    async def check(request: Request, server: Server) -> None:
        if server.settings.task != task:
            raise InvalidRequestError(
                f"the model {server.model_name!r} is served for task {server.settings.task!r}, and "
                f"{request.url.path} needs task {task!r}: {_HOW_TO_SERVE[task]}",
                param="model",
                code="unsupported_task",
            )

    return check

"""The ``--api-key`` check, done on the request line and headers before any of the body is read."""

from __future__ import annotations

import hmac

from pagedllm_core.server.errors import AuthenticationError, send_api_error

# Paths served without the key: what load balancers and Prometheus poll. Every other path, the
# API docs and unknown paths included, needs it, so no spelling of a path can slip past.
OPEN_PATHS = frozenset({"/health", "/version", "/metrics"})


def has_api_key(authorization: str, expected: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <expected>``."""
    scheme, _, given = authorization.partition(" ")
    # compare_digest takes time independent of where the strings differ.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


class ApiKeyMiddleware:
    """Answers 401 to any request off :data:`OPEN_PATHS` without ``Authorization: Bearer <key>``.

    A pure ASGI middleware placed outside the body limit, so an unauthenticated client is refused
    before the server reads (or sizes) what it sends.
    """

    def __init__(self, app, api_key: str):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if has_api_key(authorization, self.api_key):
            await self.app(scope, receive, send)
            return
        await send_api_error(send, AuthenticationError(), {"WWW-Authenticate": "Bearer"})

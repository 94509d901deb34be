"""The ``--api-key`` check: a FastAPI dependency on every route that generates or tokenizes."""

from __future__ import annotations

import hmac

from fastapi import Request

from pagedllm_core.server.errors import AuthenticationError
from pagedllm_core.server.state import Server


async def require_api_key(request: Request, server: Server) -> None:
    """Raise :class:`AuthenticationError` unless the request carries ``Authorization: Bearer <key>``."""
    expected = server.settings.api_key
    if expected is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # compare_digest takes time independent of where the strings differ.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise AuthenticationError()

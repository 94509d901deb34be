"""One access-log line per HTTP request: method, path, status, tokens in and out, latency, request id."""

from __future__ import annotations

import logging
import time

from pagedllm_core.server.errors import as_api_error, send_api_error
from pagedllm_core.server.request_context import new_request_id, open_request

logger = logging.getLogger("pagedllm.access")

REQUEST_ID_HEADER = b"x-request-id"


class AccessLogMiddleware:
    """Opens the request's :class:`~pagedllm_core.server.request_context.RequestContext`, echoes its id in
    ``X-Request-Id``, and logs the request once its response has ended (or the client has gone).

    The outermost middleware, so that its line also covers requests refused by the key check or the
    body limit; a pure ASGI one, so that streamed responses are timed to their last byte.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER)
        context = open_request(new_request_id(given.decode("latin-1") if given else None))
        status = 0
        logged = False

        def log_line() -> None:
            nonlocal logged
            if logged:
                return
            logged = True
            logger.info(
                '%s "%s %s" %s in=%d out=%d %.3fs',
                scope["client"][0] if scope.get("client") else "-",
                scope["method"],
                _printable(scope["path"]),
                status or "-",
                context.num_prompt_tokens,
                context.num_completion_tokens,
                time.monotonic() - started,
                extra={"request_id": context.request_id},
            )

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (REQUEST_ID_HEADER, context.request_id.encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Written before the last byte leaves, so a client that has its answer also has the line.
                log_line()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if status:
                raise  # the response has started; nothing more can be said to the client
            # Answered here rather than by Starlette's outermost handler, so that it carries the request id.
            api_error = as_api_error(error)
            status = api_error.status_code
            await send_api_error(send, api_error, {"X-Request-Id": context.request_id})
        finally:
            log_line()


def _printable(path: str) -> str:
    """The path with control characters escaped, so that a client cannot write extra log lines."""
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")

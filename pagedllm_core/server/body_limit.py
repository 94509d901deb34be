"""An ASGI middleware that refuses request bodies over the server's size limit with a 413."""

from __future__ import annotations

from pagedllm_core.server.errors import RequestTooLargeError, send_api_error


class BodySizeLimitMiddleware:
    """Reads each HTTP request body up to ``max_bytes`` before the app sees it; larger ones get 413.

    A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``) so that the app still receives
    the client's disconnect message, which aborts generation for clients that went away.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending the whole body
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        await send_api_error(send, RequestTooLargeError(self.max_bytes))

"""The HTTP request being served: its id and what the access log reports, reachable from any code on its path.

The :class:`~pagedllm_core.server.access_log.AccessLogMiddleware` opens one :class:`RequestContext` per
request in a context variable; tasks started while serving it (a streamed body, tokenizer threads)
inherit it, so every log line names its request and token counts reach the access-log line.
"""

from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

NO_REQUEST = "-"
LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


@dataclass
class RequestContext:
    """One HTTP request as the logs see it."""

    request_id: str
    num_prompt_tokens: int = 0
    num_completion_tokens: int = 0


_current: ContextVar[RequestContext | None] = ContextVar("pagedllm_request", default=None)


def new_request_id(given: str | None = None) -> str:
    """The client's ``X-Request-Id`` when it is short and printable (so it cannot forge log lines), else a new one."""
    if given and len(given) <= 128 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return uuid.uuid4().hex


def open_request(request_id: str) -> RequestContext:
    """Make a new context the current request of this task (and of the tasks it starts)."""
    context = RequestContext(request_id)
    _current.set(context)
    return context


def current_request() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str:
    context = _current.get()
    return NO_REQUEST if context is None else context.request_id


class RequestIdLogFilter(logging.Filter):
    """Gives every record a ``request_id`` attribute: the current request's id, or ``-`` outside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


def configure_server_logging(level: int = logging.INFO) -> None:
    """Log to stderr with a timestamp and the request id on every line (replaces earlier handlers)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdLogFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)

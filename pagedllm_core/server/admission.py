"""Admission control and draining: the engine requests this server is serving, bounded and abortable."""

from __future__ import annotations

import threading

from pagedllm_core.server.errors import ServerShuttingDownError, TooManyRequestsError


class InFlightRequests:
    """The ids of every engine request the server has added and not yet released.

    New requests are refused with 429 while ``max_num_waiting`` or more of them sit outside the
    running batch (the engine's last reported batch size), and with 503 once the server drains for
    shutdown; :meth:`request_ids` lets the shutdown abort whatever is left. Thread-safe: the
    shutdown timer reads it from its own thread.
    """

    def __init__(self, max_num_waiting: int | None):
        self.max_num_waiting = max_num_waiting
        self.draining = False
        self._request_ids: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._request_ids)

    def admit(self, request_ids: list[str], num_running: int) -> None:
        """Register these ids, or raise :class:`TooManyRequestsError` / :class:`ServerShuttingDownError`."""
        with self._lock:
            if self.draining:
                raise ServerShuttingDownError()
            num_waiting = max(0, len(self._request_ids) - num_running)
            if self.max_num_waiting is not None and num_waiting >= self.max_num_waiting:
                raise TooManyRequestsError(self.max_num_waiting)
            self._request_ids.update(request_ids)

    def release(self, request_ids: list[str]) -> None:
        with self._lock:
            self._request_ids.difference_update(request_ids)

    def drain(self) -> None:
        """Refuse new requests from now on."""
        with self._lock:
            self.draining = True

    def request_ids(self) -> list[str]:
        with self._lock:
            return list(self._request_ids)

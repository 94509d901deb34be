"""``pagedllm serve`` as a process: draining on SIGTERM, and exiting when the engine dies.

- SIGTERM (or Ctrl-C): stop accepting connections and new requests (503), let requests in flight
  finish for ``shutdown_timeout`` seconds, then abort the rest. An aborted request still ends
  well-formed: its choices finish with ``finish_reason: "abort"`` (streams then send ``[DONE]``).
  The process then exits with status 0, as orchestrators expect of a requested stop.
- Engine death: a watchdog polls the engine; once its loop has died, ``/health`` answers 503 and
  the server shuts down and exits non-zero within a few seconds, so that a supervisor restarts it
  (vLLM's behaviour), unless ``keep_serving_on_engine_death`` keeps it up answering 503.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import uvicorn

from pagedllm_core.server.state import ServerState

logger = logging.getLogger(__name__)

WATCHDOG_INTERVAL = 0.5  # seconds between engine health checks
# uvicorn cancels whatever still runs this long after the drain deadline (aborts take one engine step).
CANCEL_GRACE = 5.0


class PagedLLMServer(uvicorn.Server):
    """uvicorn's server with pagedllm's drain on SIGTERM and exit on engine death."""

    def __init__(
        self,
        config: uvicorn.Config,
        state: ServerState,
        shutdown_timeout: float,
        keep_serving_on_engine_death: bool = False,
    ):
        config.timeout_graceful_shutdown = shutdown_timeout + CANCEL_GRACE
        super().__init__(config)
        self.state = state
        self.shutdown_timeout = shutdown_timeout
        self.keep_serving_on_engine_death = keep_serving_on_engine_death
        self.engine_died = False
        self._drain_timer: threading.Timer | None = None

    def run(self, sockets=None) -> None:
        # uvicorn re-raises the signal it stopped on once it is done, which after a clean drain would
        # end the process with -15 (SIGTERM) or a KeyboardInterrupt. Ignored then, the exit status is 0.
        stop_signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stop_signals} if _on_main_thread() else {}
        try:
            super().run(sockets)
        finally:
            if self._drain_timer is not None:
                self._drain_timer.cancel()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def serve(self, sockets=None) -> None:
        watchdog = asyncio.ensure_future(self._watch_engine())
        try:
            await super().serve(sockets)
        finally:
            watchdog.cancel()

    def handle_exit(self, sig: int, frame) -> None:
        if not self.should_exit:
            self.drain()
        super().handle_exit(sig, frame)

    def drain(self) -> None:
        """Refuse new requests, and abort the ones still running ``shutdown_timeout`` seconds from now."""
        self.state.in_flight.drain()
        logger.info(
            "shutting down: %d requests in flight get %g s to finish", len(self.state.in_flight), self.shutdown_timeout
        )
        self._drain_timer = threading.Timer(self.shutdown_timeout, self._abort_in_flight)
        self._drain_timer.daemon = True
        self._drain_timer.start()

    def _abort_in_flight(self) -> None:
        request_ids = self.state.in_flight.request_ids()
        if request_ids:
            logger.warning("shutdown deadline reached: aborting %d requests", len(request_ids))
            self.state.engine.abort(request_ids)

    async def _watch_engine(self) -> None:
        while self.state.engine.is_running:
            await asyncio.sleep(WATCHDOG_INTERVAL)
        if self.should_exit:
            return  # the shutdown under way stopped the engine (the app's lifespan ends it): no death
        self.engine_died = True
        if self.keep_serving_on_engine_death:
            logger.critical("the engine loop has died; still serving (/health answers 503) as asked")
            return
        logger.critical("the engine loop has died; shutting down so that a supervisor can restart the server")
        self.state.in_flight.drain()
        self.should_exit = True


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()

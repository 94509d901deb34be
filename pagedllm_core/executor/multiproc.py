"""The ``mp`` executor: the worker runs in a process the engine starts and talks to over a pipe."""

from __future__ import annotations

import logging
import multiprocessing
from multiprocessing.connection import Connection, wait

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ConfigError
from pagedllm_core.executor import wire
from pagedllm_core.executor.base import Executor, WorkerDiedError
from pagedllm_core.executor.messages import ModelRunnerOutput, SchedulerOutput
from pagedllm_core.lora_request import LoRARequest

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0


class MultiprocExecutor(Executor):
    """Starts one worker process (spawned, so it shares no state with the engine's threads) and sends
    it each step message.

    The worker ends with the engine: on :meth:`shutdown`, when the engine's process exits (the
    worker is a daemon), and when the engine's process dies (the pipe closes, and the worker exits
    on the end of its input). A worker that dies makes the step raise :class:`WorkerDiedError`
    at once, rather than a wait for a reply that never comes.
    """

    def __init__(self, config: EngineConfig):
        context = multiprocessing.get_context("spawn")
        self._connection, child_connection = context.Pipe()
        self._process = context.Process(
            target=run_worker_process, args=(child_connection,), name="pagedllm-worker-0", daemon=True
        )
        self._process.start()
        child_connection.close()
        self._closed = False
        try:
            ready = self._call(wire.StartWorker(config))
        except BaseException:
            self.shutdown()
            raise
        self.num_kv_blocks = ready.num_kv_blocks

    @property
    def worker_pids(self) -> list[int]:
        return [self._process.pid]

    def execute_model(self, message: SchedulerOutput) -> ModelRunnerOutput:
        return self._call(message)

    def add_lora(self, lora_request: LoRARequest) -> bool:
        reply = self._call(wire.AddLoRA(lora_request))
        if isinstance(reply, wire.LoRAFailure):
            raise ConfigError(reply.message)
        return reply

    def remove_lora(self, lora_int_id: int) -> bool:
        return self._call(wire.RemoveLoRA(lora_int_id))

    def _call(self, message):
        if self._closed:
            raise WorkerDiedError("the worker process has been shut down")
        try:
            self._connection.send_bytes(wire.encode(message))
        except OSError as error:
            raise self._died() from error
        # Wake on a reply or on the worker's exit, whichever comes first.
        wait([self._connection, self._process.sentinel])
        if not self._connection.poll():
            raise self._died()
        try:
            reply = wire.decode(self._connection.recv_bytes())
        except (EOFError, OSError) as error:
            raise self._died() from error
        if isinstance(reply, wire.WorkerFailure):
            raise WorkerDiedError(f"the worker process failed: {reply.message}")
        return reply

    def _died(self) -> WorkerDiedError:
        self._process.join(1.0)
        return WorkerDiedError(
            f"the worker process (pid {self._process.pid}) died with exit code {self._process.exitcode}; "
            "the requests it was running cannot complete"
        )

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._process.is_alive():
            try:
                self._connection.send_bytes(wire.encode(wire.ShutdownWorker()))
            except OSError:
                pass
            self._process.join(SHUTDOWN_GRACE_SECONDS)
        if self._process.is_alive():
            logger.warning("worker process %d did not exit; killing it", self._process.pid)
            self._process.kill()
        self._process.join()
        self._connection.close()


def run_worker_process(connection: Connection) -> None:
    """The worker process's main loop: load the model, then answer each message until told to stop
    or until the engine's end of the pipe closes."""
    from pagedllm_core.worker.worker import Worker

    try:
        start = wire.decode(connection.recv_bytes())
        worker = Worker(start.config)
    except EOFError:
        return
    except Exception as error:  # noqa: BLE001 - reported to the engine, which raises it
        connection.send_bytes(wire.encode(wire.WorkerFailure(f"{type(error).__name__}: {error}")))
        return
    connection.send_bytes(wire.encode(worker.ready))
    while True:
        try:
            message = wire.decode(connection.recv_bytes())
        except EOFError:
            return
        if isinstance(message, wire.ShutdownWorker):
            return
        try:
            reply = _handle(worker, message)
        except Exception as error:  # noqa: BLE001 - reported to the engine, which raises it
            logger.exception("the worker failed to run a step")
            reply = wire.WorkerFailure(f"{type(error).__name__}: {error}")
        connection.send_bytes(wire.encode(reply))


def _handle(worker, message):
    """The worker's reply to one message: a step's output, or the outcome of an adapter change."""
    if isinstance(message, wire.AddLoRA):
        try:
            return worker.add_lora(message.lora_request)
        except ConfigError as error:  # an unusable adapter is the caller's error, not the worker's
            return wire.LoRAFailure(str(error))
    if isinstance(message, wire.RemoveLoRA):
        return worker.remove_lora(message.lora_int_id)
    return worker.execute_model(message)

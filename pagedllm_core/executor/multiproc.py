"""The ``mp`` executor: worker processes the engine starts, one per tensor-parallel rank on this node.

The engine talks to the driver worker (rank 0) over a pipe; the driver broadcasts each message to
the other ranks over the tensor-parallel group, so ranks on other machines (``--headless`` nodes,
:func:`run_headless`) get the same messages without a pipe of their own.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
from multiprocessing.connection import Connection, wait
from pathlib import Path

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ConfigError
from pagedllm_core.executor import wire
from pagedllm_core.executor.base import WorkerDiedError
from pagedllm_core.executor.remote import RemoteExecutor

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0
# While the engine sends nothing, the driver tells the other ranks it is alive this often.
KEEPALIVE_SECONDS = 60.0


class LocalWorkers:
    """The worker processes of one node's tensor-parallel ranks (spawned, so they share no state with
    the engine's threads), each with a pipe for its start-up and, on rank 0, for every message.

    The workers end with their parent: on :meth:`shutdown`, when the parent exits (they are daemons),
    and when it dies: rank 0 exits at the end of its pipe, and the other ranks when rank 0 leaves
    their group (their next collective fails).
    """

    def __init__(self, config: EngineConfig):
        context = multiprocessing.get_context("spawn")
        local_size = config.tensor_parallel_size // config.nnodes
        self.ranks = range(config.node_rank * local_size, (config.node_rank + 1) * local_size)
        self._rendezvous_dir = None
        init_method = None
        if config.tensor_parallel_size > 1:
            init_method = self._init_method(config)
        self.connections: list[Connection] = []
        self.processes = []
        self._closed = False
        try:
            for rank in self.ranks:
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=run_worker_process, args=(child_end,), name=f"pagedllm-worker-{rank}", daemon=True
                )
                self.connections.append(parent_end)
                process.start()
                child_end.close()
                self.processes.append(process)
            for connection, rank in zip(self.connections, self.ranks):
                connection.send_bytes(wire.encode(wire.StartWorker(config, rank, init_method)))
            self.ready = [self.receive(index) for index in range(len(self.processes))]
        except BaseException:
            self.shutdown()
            raise

    def _init_method(self, config: EngineConfig) -> str:
        if config.nnodes > 1:
            return f"tcp://{config.master_addr}:{config.master_port}"
        # One machine: the ranks meet through a file only this user can read, not a listening socket.
        self._rendezvous_dir = tempfile.mkdtemp(prefix="pagedllm-tp-")
        return (Path(self._rendezvous_dir) / "rendezvous").as_uri()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def send(self, index: int, message_bytes: bytes) -> None:
        if self._closed:
            raise WorkerDiedError("the worker processes have been shut down")
        try:
            self.connections[index].send_bytes(message_bytes)
        except OSError as error:
            raise self._died() from error

    def receive(self, index: int):
        """Worker ``index``'s reply; raises :class:`WorkerDiedError` as soon as any worker has exited."""
        connection = self.connections[index]
        wait([connection, *(process.sentinel for process in self.processes)])
        if not connection.poll():
            # Another worker exited first; if it said why (a rank that could not start), that is the error.
            raise self._reported_failure() or self._died()
        try:
            reply = wire.decode(connection.recv_bytes())
        except (EOFError, OSError) as error:
            raise self._died() from error
        if isinstance(reply, wire.WorkerFailure):
            # A rank whose peer was killed reports the error of its collective (a connection reset by
            # the peer) before the peer's exit is noticed here: the dead peer is the cause to name.
            if not reply.is_config_error and wait([process.sentinel for process in self.processes], timeout=0.1):
                raise self._died() from _failure_error(reply)
            raise _failure_error(reply)
        return reply

    def _reported_failure(self) -> Exception | None:
        for connection in self.connections:
            try:
                if connection.poll():
                    reply = wire.decode(connection.recv_bytes())
                    if isinstance(reply, wire.WorkerFailure):
                        return _failure_error(reply)
            except (EOFError, OSError):
                continue
        return None

    def wait(self) -> int:
        """Block until a worker exits; shut the others down and return the first exit code."""
        ready = wait([process.sentinel for process in self.processes])
        # Its sentinel can be ready a moment before the process can be reaped (is_alive() still True).
        exited = next(process for process in self.processes if process.sentinel in ready)
        exited.join()
        self.shutdown()
        return exited.exitcode

    def _died(self) -> WorkerDiedError:
        # A process's sentinel is ready once it exits, a moment before it can be reaped: join those.
        exited = wait([process.sentinel for process in self.processes], timeout=1.0)
        dead = [process for process in self.processes if process.sentinel in exited] or self.processes[:1]
        for process in dead:
            process.join(1.0)
        described = ", ".join(f"pid {process.pid} exit code {process.exitcode}" for process in dead)
        return WorkerDiedError(f"a worker process died ({described}); the requests it was running cannot complete")

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.processes and self.processes[0].is_alive():
            try:
                self.connections[0].send_bytes(wire.SHUTDOWN_WORKER)
            except OSError:
                pass
        for process in self.processes:
            process.join(SHUTDOWN_GRACE_SECONDS)
            if process.is_alive():
                logger.warning("worker process %d did not exit; killing it", process.pid)
                process.kill()
                process.join()
        for connection in self.connections:
            connection.close()
        if self._rendezvous_dir is not None:
            shutil.rmtree(self._rendezvous_dir, ignore_errors=True)


class MultiprocExecutor(RemoteExecutor):
    """Runs each step on this node's worker processes (see :class:`LocalWorkers`) through rank 0.

    A worker that dies makes the step raise :class:`WorkerDiedError` at once, rather than a wait for
    a reply that never comes. The engine runs on node 0; other nodes run :func:`run_headless`.
    """

    def __init__(self, config: EngineConfig):
        if config.node_rank != 0:
            raise ConfigError(f"the engine runs on node 0; node_rank {config.node_rank} runs headless (--headless)")
        self._workers = LocalWorkers(config)
        self.num_kv_blocks = self._workers.ready[0].num_kv_blocks

    @property
    def worker_pids(self) -> list[int]:
        return self._workers.pids

    def _call(self, message):
        self._workers.send(0, wire.encode(message))
        return self._workers.receive(0)

    def shutdown(self) -> None:
        self._workers.shutdown()


def _failure_error(failure: wire.WorkerFailure) -> Exception:
    if failure.is_config_error:
        return ConfigError(failure.message)
    return WorkerDiedError(f"the worker process failed: {failure.message}")


def run_headless(config: EngineConfig) -> int:
    """A node other than 0 (``--node-rank`` > 0): start this node's ranks, which join node 0's group and
    follow its driver; returns when they end (when the engine on node 0 shuts down or a rank fails)."""
    if config.nnodes == 1 or config.node_rank == 0:
        raise ConfigError("--headless runs the ranks of another node: it needs --nnodes > 1 and --node-rank > 0")
    workers = LocalWorkers(config)
    logger.info("node %d: ranks %s joined the group at %s:%d", config.node_rank, list(workers.ranks), config.master_addr, config.master_port)
    return workers.wait()


def run_worker_process(connection: Connection) -> None:
    """A worker process's main loop: load the model, then run messages, from the pipe (rank 0) or from
    rank 0's broadcasts (the others), until told to stop or until the engine's end of the pipe closes."""
    exit_code = 0
    try:
        _serve_worker(connection)
    except BaseException:
        logger.exception("the worker process failed")
        exit_code = 1
    # Skip the interpreter's finalization: with a model loaded its garbage collection takes seconds,
    # and nothing here needs finalizing once the group is left and the pipe closed.
    connection.close()
    logging.shutdown()
    os._exit(exit_code)


def _serve_worker(connection: Connection) -> None:
    from pagedllm_core.worker.worker import Worker

    try:
        start = wire.decode(connection.recv_bytes())
        worker = Worker(start.config, rank=start.rank, distributed_init_method=start.distributed_init_method)
    except EOFError:
        return
    except ConfigError as error:
        connection.send_bytes(wire.encode(wire.WorkerFailure(str(error), is_config_error=True)))
        return
    except Exception as error:
        logger.exception("the worker failed to start")
        connection.send_bytes(wire.encode(wire.WorkerFailure(f"{type(error).__name__}: {error}")))
        return
    connection.send_bytes(wire.encode(worker.ready))
    try:
        if worker.tp.is_driver:
            _drive(worker, connection)
        else:
            worker.follow()
    finally:
        worker.shutdown()


def _drive(worker, connection: Connection) -> None:
    """Rank 0: run each message from the engine (broadcasting it to the other ranks) and reply."""
    while True:
        if worker.tp.world_size > 1 and not connection.poll(KEEPALIVE_SECONDS):
            worker.run_driver_message(wire.KEEP_ALIVE)
            continue
        try:
            payload = connection.recv_bytes()
        except EOFError:
            payload = wire.SHUTDOWN_WORKER  # the engine is gone: take the other ranks down with this one
        try:
            reply = worker.run_driver_message(payload)
        except Exception as error:
            logger.exception("the worker failed to run a step")
            connection.send_bytes(wire.encode(wire.WorkerFailure(f"{type(error).__name__}: {error}")))
            if worker.tp.world_size > 1:
                raise  # the ranks' collectives are out of step: this group cannot run another step
            continue
        if payload == wire.SHUTDOWN_WORKER:
            return
        if reply is not None:
            connection.send_bytes(wire.encode(reply))


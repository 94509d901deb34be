"""The ``ray`` executor: one Ray actor per tensor-parallel rank, placed by a placement group, so that a
model can span the machines of a Ray cluster (``pip install 'pagedllm[ray]'``; docs/distributed_ray.md).

Ray carries only bytes between the engine and the actors: each message and each reply is encoded with
:mod:`~pagedllm_core.executor.wire` and decoded by its restricted unpickler, as on the ``mp`` pipes.
Rank 0's actor runs every message (broadcasting it to the other ranks over gloo); the other actors sit
in :meth:`Worker.follow` as one long call each, whose early end means their rank is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ConfigError
from pagedllm_core.executor import wire
from pagedllm_core.executor.base import WorkerDiedError
from pagedllm_core.executor.multiproc import KEEPALIVE_SECONDS, SHUTDOWN_GRACE_SECONDS
from pagedllm_core.executor.remote import RemoteExecutor

logger = logging.getLogger(__name__)

PLACEMENT_STRATEGY_ENV = "PAGEDLLM_RAY_PLACEMENT_STRATEGY"
CPUS_PER_WORKER_ENV = "PAGEDLLM_RAY_CPUS_PER_WORKER"
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# How long the bundles may wait for resources that the cluster has but others hold.
PLACEMENT_TIMEOUT_SECONDS = 120.0
# After rank 0 reports a failed step, how long to wait for Ray to say which rank's actor is gone.
DEATH_REPORT_SECONDS = 5.0


def import_ray():
    """Ray, or a ``ConfigError`` that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ConfigError("distributed_executor_backend='ray' needs Ray: pip install 'pagedllm[ray]'") from error
    return ray


def placement_settings() -> tuple[str, int]:
    """The placement strategy and the CPUs each rank's bundle reserves, from the environment."""
    strategy = os.environ.get(PLACEMENT_STRATEGY_ENV, "PACK").upper()
    if strategy not in PLACEMENT_STRATEGIES:
        raise ConfigError(f"{PLACEMENT_STRATEGY_ENV}={strategy!r}: expected one of {', '.join(PLACEMENT_STRATEGIES)}")
    cpus = os.environ.get(CPUS_PER_WORKER_ENV, "1")
    if not cpus.isdigit() or int(cpus) < 1:
        raise ConfigError(f"{CPUS_PER_WORKER_ENV}={cpus!r}: expected a whole number of CPUs, at least 1")
    return strategy, int(cpus)


class RankActor:
    """One tensor-parallel rank inside a Ray worker process (wrapped by ``ray.remote`` at start-up).

    Every method takes and returns plain values or bytes: the messages stay in wire's encoding.
    """

    def __init__(self):
        self.worker = None
        self._rendezvous_dir: str | None = None

    def describe(self) -> tuple[int, str, str]:
        """This process's pid, its Ray node's id and the address that node advertises."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def rendezvous(self, one_node: bool) -> str:
        """Where the ranks meet, on rank 0's node: a private file when every rank runs on that node, else
        a free TCP port on the address the node advertises to the cluster."""
        if one_node:
            self._rendezvous_dir = tempfile.mkdtemp(prefix="pagedllm-tp-")
            return (Path(self._rendezvous_dir) / "rendezvous").as_uri()
        address = self.describe()[2]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
            port = sock.getsockname()[1]
        return f"tcp://{address}:{port}"

    def start(self, payload: bytes, cpu_threads: int | None) -> bytes:
        """Build this rank's :class:`Worker` from an encoded ``StartWorker``; the encoded ``WorkerReady``."""
        from pagedllm_core.worker.worker import Worker

        start = wire.decode(payload)
        config = start.config
        if cpu_threads is not None and config.num_cpu_threads is None:
            config = config.model_copy(update={"num_cpu_threads": cpu_threads})
        try:
            self.worker = Worker(config, rank=start.rank, distributed_init_method=start.distributed_init_method)
        except Exception as error:
            logger.exception("rank %d failed to start", start.rank)
            return wire.encode(worker_failure(error))
        return wire.encode(self.worker.ready)

    def run(self, payload: bytes) -> bytes:
        """Rank 0: run one encoded message on every rank; the encoded reply."""
        try:
            reply = self.worker.run_driver_message(payload)
        except Exception as error:
            logger.exception("rank 0 failed to run a step")
            return wire.encode(worker_failure(error))
        if payload == wire.SHUTDOWN_WORKER:
            self._close()
        return wire.encode(reply)

    def follow(self) -> None:
        """The other ranks: run rank 0's broadcasts until it says to shut down (or the group breaks)."""
        try:
            self.worker.follow()
        finally:
            self._close()

    def _close(self) -> None:
        self.worker.shutdown()
        if self._rendezvous_dir is not None:
            shutil.rmtree(self._rendezvous_dir, ignore_errors=True)


def one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def worker_failure(error: Exception) -> wire.WorkerFailure:
    """The reply of a rank that could not start or run a message; a ``ConfigError`` stays one for the engine."""
    if isinstance(error, ConfigError):
        return wire.WorkerFailure(str(error), is_config_error=True)
    return wire.WorkerFailure(f"{type(error).__name__}: {error}")


class RayExecutor(RemoteExecutor):
    """Runs each step on Ray actors, one per tensor-parallel rank, through rank 0's actor.

    Uses the Ray runtime this process already joined, else the cluster at ``RAY_ADDRESS``, else starts a
    private one on this machine (dashboard off) that it stops again on :meth:`shutdown`. The ranks'
    bundles (``{"CPU": n}`` or ``{"GPU": 1}``) form one placement group, packed onto as few nodes as
    possible unless ``PAGEDLLM_RAY_PLACEMENT_STRATEGY`` says otherwise. An actor or node that is lost
    makes the step raise :class:`WorkerDiedError` as soon as Ray notices, never a wait without end.
    """

    def __init__(self, config: EngineConfig):
        if config.nnodes != 1:
            raise ConfigError(
                "nnodes/node_rank are for distributed_executor_backend 'mp'; with 'ray', the placement group puts "
                "the ranks on the cluster's nodes (leave nnodes at 1)"
            )
        self._ray = import_ray()
        strategy, cpus = placement_settings()
        self._on_gpu = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
        self._started_ray = False
        self._placement_group = None
        self._actors: list = []
        self._ranks: list[tuple[int, str, str]] = []
        self._followers: list = []
        self._workers_started = False
        self._init_method: str | None = None
        self._failure: WorkerDiedError | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        try:
            self._join_cluster(config.tensor_parallel_size * cpus)
            self._place(config.tensor_parallel_size, strategy, cpus)
            self._start_workers(config, cpus)
        except BaseException:
            self.shutdown()
            raise
        if config.tensor_parallel_size > 1:
            threading.Thread(target=self._keep_alive, name="pagedllm-ray-keepalive", daemon=True).start()

    @property
    def worker_pids(self) -> list[int]:
        return [pid for pid, _, _ in self._ranks]

    @property
    def worker_nodes(self) -> list[str]:
        """The address of each rank's node, in rank order."""
        return [address for _, _, address in self._ranks]

    def _join_cluster(self, cpus_needed: int) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
            return
        resources = {} if self._on_gpu else {"num_cpus": cpus_needed}
        # A runtime of our own reports nothing home unless its user asks for it (Ray's usage stats).
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address="local", include_dashboard=False, **resources)
        self._started_ray = True

    def _place(self, world_size: int, strategy: str, cpus: int) -> None:
        ray = self._ray
        from ray.util.placement_group import placement_group

        bundle = {"GPU": 1} if self._on_gpu else {"CPU": cpus}
        self._check_capacity(world_size, strategy, bundle)
        self._placement_group = placement_group([dict(bundle) for _ in range(world_size)], strategy=strategy)
        ready, _ = ray.wait([self._placement_group.ready()], timeout=PLACEMENT_TIMEOUT_SECONDS)
        if not ready:
            raise ConfigError(
                f"Ray could not reserve {world_size} bundles of {bundle} ({strategy}) within "
                f"{PLACEMENT_TIMEOUT_SECONDS:g}s; the cluster has {ray.available_resources()} available"
            )

    def _check_capacity(self, world_size: int, strategy: str, bundle: dict) -> None:
        """Refuse at once a placement that this cluster could never satisfy, rather than wait for it."""
        nodes = [node for node in self._ray.nodes() if node["Alive"]]
        resource, amount = next(iter(bundle.items()))
        fits = [int(node["Resources"].get(resource, 0) // amount) for node in nodes]
        if strategy == "STRICT_SPREAD":
            possible = sum(1 for count in fits if count >= 1)
        elif strategy == "STRICT_PACK":
            possible = max(fits, default=0)
        else:
            possible = sum(fits)
        if possible < world_size:
            raise ConfigError(
                f"tensor_parallel_size={world_size} needs {world_size} bundles of {bundle} placed {strategy}, but "
                f"the Ray cluster's {len(nodes)} node(s) can hold {possible}: add nodes or resources, or choose "
                f"another {PLACEMENT_STRATEGY_ENV} ({', '.join(PLACEMENT_STRATEGIES)})"
            )

    def _start_workers(self, config: EngineConfig, cpus: int) -> None:
        ray = self._ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        resources = dict(num_cpus=0, num_gpus=1) if self._on_gpu else dict(num_cpus=cpus, num_gpus=0)
        remote_rank = ray.remote(max_restarts=0, **resources)(RankActor)
        self._actors = [
            remote_rank.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self._placement_group, placement_group_bundle_index=rank
                ),
            ).remote()
            for rank in range(config.tensor_parallel_size)
        ]
        self._ranks = self._get_starting([actor.describe.remote() for actor in self._actors])
        one_node = len({node_id for _, node_id, _ in self._ranks}) == 1
        init_method = self._get_starting([self._actors[0].rendezvous.remote(one_node)])[0]
        cpu_threads = None if self._on_gpu else cpus
        starts = [
            actor.start.remote(wire.encode(wire.StartWorker(config, rank, init_method)), cpu_threads)
            for rank, actor in enumerate(self._actors)
        ]
        ready = [self._decode(payload) for payload in self._get_starting(starts)]
        self.num_kv_blocks = ready[0].num_kv_blocks
        self._followers = [actor.follow.remote() for actor in self._actors[1:]]
        self._workers_started = True
        self._init_method = init_method
        logger.info("tensor-parallel ranks on Ray nodes %s, met at %s", self.worker_nodes, init_method)

    def _call(self, message):
        with self._lock:
            if self._closed:
                raise WorkerDiedError("the Ray workers have been shut down")
            if self._failure is not None:
                raise self._failure
            return self._run_on_driver(wire.encode(message))

    def _run_on_driver(self, payload: bytes):
        """Send one message to rank 0 and wait for its reply or for any rank's end, whichever comes first."""
        ray = self._ray
        reply_ref = self._actors[0].run.remote(payload)
        calls = [reply_ref, *self._followers]
        ready, _ = ray.wait(calls, num_returns=1)
        if reply_ref in ready:
            try:
                return self._decode(ray.get(reply_ref))
            except WorkerDiedError as error:
                if len(self._actors) == 1:
                    raise self._fail(error) from None
            except ray.exceptions.RayError:
                pass
        raise self._fail(self._diagnose(calls))

    def _diagnose(self, calls: list) -> WorkerDiedError:
        """The error for a group that broke: the rank whose actor died, if Ray reports one within
        DEATH_REPORT_SECONDS (the others' calls fail too, as their collectives lose it), else the first to fail."""
        ray = self._ray
        deadline = time.monotonic() + DEATH_REPORT_SECONDS
        pending, first = list(calls), None
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            rank = calls.index(ready[0])
            died, cause = self._outcome(ready[0])
            if died:
                return self._rank_error(rank, "died", cause)
            first = first or (rank, cause)
        return self._rank_error(first[0], "failed", first[1])

    def _outcome(self, ref) -> tuple[bool, str]:
        """Whether the actor behind a finished call died, and what ended the call, in one line."""
        ray = self._ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as error:
            return True, one_line(error)
        except ray.exceptions.RayTaskError as error:
            return False, one_line(error.cause if error.cause is not None else error)
        except ray.exceptions.RayError as error:
            return False, one_line(error)
        reply = wire.decode(result) if isinstance(result, bytes) else None
        if isinstance(reply, wire.WorkerFailure):
            return False, reply.message
        return False, "it left the group"

    def _rank_error(self, rank: int, what: str, cause: str) -> WorkerDiedError:
        pid, _, address = self._ranks[rank]
        return WorkerDiedError(
            f"the Ray actor of tensor-parallel rank {rank} (pid {pid} on node {address}) {what}: {cause}; "
            "the requests it was running cannot complete"
        )

    def _fail(self, error: WorkerDiedError) -> WorkerDiedError:
        self._failure = error
        return error

    def _decode(self, payload: bytes):
        reply = wire.decode(payload)
        if isinstance(reply, wire.WorkerFailure):
            if reply.is_config_error:
                raise ConfigError(reply.message)
            raise WorkerDiedError(f"a Ray worker failed: {reply.message}")
        return reply

    def _get_starting(self, refs: list) -> list:
        try:
            return self._ray.get(refs)
        except self._ray.exceptions.RayError as error:
            raise WorkerDiedError(f"a Ray worker died while the workers started: {error}") from None

    def _keep_alive(self) -> None:
        """Between steps, every KEEPALIVE_SECONDS, rank 0 tells the other ranks it is alive, so that their wait
        for its next broadcast never reaches the group's timeout while the engine is idle."""
        while not self._stop.wait(KEEPALIVE_SECONDS):
            with self._lock:
                if self._closed or self._failure is not None:
                    return
                try:
                    self._run_on_driver(wire.KEEP_ALIVE)
                except WorkerDiedError:
                    return  # the next step reports it

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        ray = self._ray
        if not ray.is_initialized():
            return  # the runtime has gone (at exit, or stopped by its owner), and the actors with it
        with self._lock:
            if self._workers_started and self._failure is None:
                try:
                    goodbye = self._actors[0].run.remote(wire.SHUTDOWN_WORKER)
                    ray.get(goodbye, timeout=SHUTDOWN_GRACE_SECONDS)
                    ray.wait(self._followers, num_returns=len(self._followers), timeout=SHUTDOWN_GRACE_SECONDS)
                except ray.exceptions.RayError:
                    pass  # killed below either way
            for actor in self._actors:
                ray.kill(actor)
            if self._placement_group is not None:
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(self._placement_group)
            if self._started_ray:
                ray.shutdown()
                if self._init_method is not None and self._init_method.startswith("file://"):
                    # Rank 0 removes it when it shuts down cleanly; after a death, this machine's runtime was
                    # the only place it could be.
                    shutil.rmtree(Path(urlparse(self._init_method).path).parent, ignore_errors=True)

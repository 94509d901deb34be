"""Data parallelism: one server in front of several engine replicas, each with its own worker process.

:class:`DataParallelEngine` answers what the server asks of an :class:`AsyncLLMEngine` (add, abort,
stats, health, adapters, shutdown), so every route works unchanged. Each request goes to one
replica chosen by a router (``server/routing.py``); its stream, aborts and counters stay with that
replica. A monitor thread watches every replica: one whose engine loop stopped or whose worker
process exited is marked dead and shut down, its in-flight requests end with the engine-death
error (naming the replica), and new requests go to the live ones. The front is healthy while at
least one replica lives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import threading
from typing import Any

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.async_engine import AsyncLLMEngine, EngineDeadError, EngineStats, RequestStream
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.outputs import RequestOutput
from pagedllm_core.registry import default_registry
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams
from pagedllm_core.server.routing import ReplicaLoad, RoutingPolicyName, build_router

logger = logging.getLogger(__name__)

MONITOR_INTERVAL = 0.25  # seconds between replica health checks
REPLICA_SHUTDOWN_TIMEOUT = 10.0


class Replica:
    """One engine replica and the front's bookkeeping of it."""

    def __init__(self, index: int, engine: AsyncLLMEngine):
        self.index = index
        self.engine = engine
        # An executor without local worker processes is watched through its engine loop only.
        self.worker_pids: list[int] = list(getattr(engine.engine.executor, "worker_pids", []))
        self.num_in_flight = 0
        self.num_routed = 0
        self.death: str | None = None  # why it died; None while alive

    def find_death(self) -> str | None:
        """Why this replica can no longer serve (its loop stopped, or a worker process exited); None if it can."""
        if self.death is not None:
            return self.death
        try:
            self.engine.check_health()
        except EngineDeadError as error:
            return str(error)
        live_children = {child.pid for child in multiprocessing.active_children()}
        exited = [pid for pid in self.worker_pids if pid not in live_children]
        if exited:
            return f"its worker process (pid {', '.join(map(str, exited))}) exited"
        return None

    @property
    def alive(self) -> bool:
        return self.find_death() is None

    def load(self) -> ReplicaLoad:
        return ReplicaLoad(self.index, self.alive, self.num_in_flight, self.num_routed)

    def summary(self) -> dict[str, Any]:
        """This replica's state for ``/health``."""
        stats = self.engine.stats()
        death = self.find_death()
        return {
            "index": self.index,
            "alive": death is None,
            "error": death,
            "worker_pids": self.worker_pids,
            "num_requests_in_flight": self.num_in_flight,
            "num_requests_routed": self.num_routed,
            "num_requests_running": stats.num_running_requests if death is None else 0,
            "num_requests_waiting": stats.num_waiting_requests if death is None else 0,
            "prefix_cache_hit_rate": prefix_cache_hit_rate(stats),
        }


def prefix_cache_hit_rate(stats: EngineStats) -> float:
    """Looked-up prompt tokens found in the prefix cache since start (0 before any lookup)."""
    return stats.num_prefix_cache_hits / stats.num_prefix_cache_queries if stats.num_prefix_cache_queries else 0.0


def replica_configs(config: EngineConfig, data_parallel_size: int) -> list[EngineConfig]:
    """Each replica's engine config: its worker in its own process (``mp``), the CPU cores and the
    device memory split between replicas unless ``config`` set them."""
    update: dict[str, Any] = {}
    if config.distributed_executor_backend == "uni":
        update["distributed_executor_backend"] = "mp"
    if config.num_cpu_threads is None:
        update["num_cpu_threads"] = max(1, len(os.sched_getaffinity(0)) // data_parallel_size)
    if "gpu_memory_utilization" not in config.model_fields_set:
        update["gpu_memory_utilization"] = config.gpu_memory_utilization / data_parallel_size
    return [config.model_copy(update=update) for _ in range(data_parallel_size)]


class RoutedStream:
    """A replica's :class:`RequestStream` that tells the front when its request is over."""

    def __init__(self, stream: RequestStream, replica: Replica, release):
        self._stream = stream
        self._replica = replica
        self._release = release

    @property
    def request_id(self) -> str:
        return self._stream.request_id

    @property
    def finished(self) -> bool:
        return self._stream.finished

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> RequestOutput:
        try:
            output = await anext(self._stream)
        except EngineDeadError as error:
            self._release()
            raise EngineDeadError(f"data-parallel replica {self._replica.index} died: {error}") from error
        except BaseException:
            if self._stream.finished:
                self._release()
            raise
        if output.finished:
            self._release()
        return output

    def close(self) -> None:
        self._stream.close()
        self._release()

    def __enter__(self) -> RoutedStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class DataParallelEngine:
    """Several :class:`AsyncLLMEngine` replicas behind the async engine's interface (see module doc)."""

    def __init__(self, engines: list[AsyncLLMEngine], routing: RoutingPolicyName = "prefix_aware"):
        if not engines:
            raise ValueError("a data-parallel engine needs at least one replica")
        self.replicas = [Replica(index, engine) for index, engine in enumerate(engines)]
        self.tokenizer = engines[0].tokenizer
        self.max_model_len = engines[0].max_model_len
        self.routing = routing
        self.router = build_router(routing, engines[0].engine.config.block_size)
        self._lock = threading.Lock()  # the routing counters and the request -> replica map
        self._replica_of: dict[str, Replica] = {}
        self._stopped = threading.Event()
        self._monitor = threading.Thread(target=self._watch_replicas, name="pagedllm-dp-monitor", daemon=True)
        self._monitor.start()

    @classmethod
    def from_config(
        cls, config: EngineConfig, data_parallel_size: int, routing: RoutingPolicyName = "prefix_aware"
    ) -> DataParallelEngine:
        """Start ``data_parallel_size`` replicas of ``config`` side by side; if one fails to start,
        the others are shut down and its error raised."""
        if data_parallel_size < 1:
            raise ValueError(f"data_parallel_size must be >= 1, got {data_parallel_size}")
        configs = replica_configs(config, data_parallel_size)
        default_registry()  # load the plugins once, here, rather than racing to in each replica's thread
        with concurrent.futures.ThreadPoolExecutor(data_parallel_size) as pool:
            futures = [pool.submit(AsyncLLMEngine.from_config, replica_config) for replica_config in configs]
            concurrent.futures.wait(futures)
        engines = [future.result() for future in futures if future.exception() is None]
        errors = [future.exception() for future in futures if future.exception() is not None]
        if errors:
            _shutdown_all(engines)
            raise errors[0]
        return cls(engines, routing)

    # -- what the server calls --------------------------------------------------------------------

    async def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | BeamSearchParams,
        lora_request: LoRARequest | None = None,
    ) -> RoutedStream:
        """Route the request to a replica and add it there; a replica found dead on the way is skipped."""
        if isinstance(prompt, str):
            prompt_token_ids = await asyncio.to_thread(self.tokenizer.encode, prompt)
        else:
            prompt_token_ids = list(prompt)
        lora_int_id = lora_request.lora_int_id if lora_request is not None else 0
        while True:
            replica = self._route(request_id, prompt_token_ids, lora_int_id)
            release = self._releaser(request_id, replica)
            try:
                stream = await replica.engine.add_request(request_id, prompt_token_ids, params, lora_request)
            except EngineDeadError:
                release()
                continue  # it died since it was chosen, so the request never reached it: place it again
            except BaseException:
                release()
                raise
            return RoutedStream(stream, replica, release)

    def abort(self, request_ids: str | list[str]) -> None:
        """Abort these requests on their replicas (unknown or finished ids are ignored)."""
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        by_replica: dict[int, list[str]] = {}
        with self._lock:
            for request_id in ids:
                replica = self._replica_of.get(request_id)
                if replica is not None:
                    by_replica.setdefault(replica.index, []).append(request_id)
        for index, replica_ids in by_replica.items():
            self.replicas[index].engine.abort(replica_ids)

    async def add_lora(self, lora_request: LoRARequest) -> bool:
        """Load the adapter on every live replica; False if every one had it loaded already."""
        results = await asyncio.gather(*(r.engine.add_lora(lora_request) for r in self.live_replicas()))
        return any(results)

    async def remove_lora(self, lora_int_id: int) -> bool:
        results = await asyncio.gather(*(r.engine.remove_lora(lora_int_id) for r in self.live_replicas()))
        return any(results)

    def stats(self) -> EngineStats:
        """The replicas' stats summed; a dead replica adds its counters but no load or blocks."""
        totals = dict.fromkeys((field.name for field in dataclasses.fields(EngineStats)), 0)
        for replica in self.replicas:
            stats = replica.engine.stats()
            if not replica.alive:
                stats = dataclasses.replace(
                    stats, num_running_requests=0, num_waiting_requests=0, num_used_blocks=0, num_blocks=0
                )
            for name in totals:
                totals[name] += getattr(stats, name)
        return EngineStats(**totals)

    @property
    def is_running(self) -> bool:
        """True while at least one replica lives (one dead replica of several is degraded, not dead)."""
        return bool(self.live_replicas())

    def check_health(self) -> None:
        """Raise :class:`EngineDeadError` once every replica has died."""
        if not self.is_running:
            raise self._all_dead_error()

    def _all_dead_error(self) -> EngineDeadError:
        reasons = "; ".join(f"replica {r.index}: {r.find_death()}" for r in self.replicas)
        return EngineDeadError(f"all {len(self.replicas)} data-parallel replicas have died ({reasons})")

    def live_replicas(self) -> list[Replica]:
        return [replica for replica in self.replicas if replica.alive]

    def summary(self) -> dict[str, Any]:
        """The front's state for ``/health``: ok, degraded (some replicas dead) or dead, and each replica's."""
        replicas = [replica.summary() for replica in self.replicas]
        num_alive = sum(replica["alive"] for replica in replicas)
        status = "ok" if num_alive == len(replicas) else "degraded" if num_alive else "dead"
        return {
            "status": status,
            "data_parallel_size": len(replicas),
            "routing": self.routing,
            "num_live_replicas": num_alive,
            "replicas": replicas,
        }

    def shutdown(self, timeout: float | None = REPLICA_SHUTDOWN_TIMEOUT) -> None:
        """Stop the monitor and every replica (their worker processes end with them)."""
        self._stopped.set()
        if self._monitor is not threading.current_thread():
            self._monitor.join()
        _shutdown_all([replica.engine for replica in self.replicas], timeout)

    # -- routing and the monitor ------------------------------------------------------------------

    def _route(self, request_id: str, prompt_token_ids: list[int], lora_int_id: int) -> Replica:
        with self._lock:
            try:
                index = self.router.choose(prompt_token_ids, [r.load() for r in self.replicas], lora_int_id)
            except ValueError:  # no live replica; replicas never come back, so this stays true
                raise self._all_dead_error() from None
            replica = self.replicas[index]
            replica.num_in_flight += 1
            replica.num_routed += 1
            self._replica_of[request_id] = replica
            return replica

    def _releaser(self, request_id: str, replica: Replica):
        """A function ending the request's bookkeeping on ``replica``; calls after the first do nothing."""
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                replica.num_in_flight -= 1
                if self._replica_of.get(request_id) is replica:
                    del self._replica_of[request_id]

        return release

    def _watch_replicas(self) -> None:
        while not self._stopped.wait(MONITOR_INTERVAL):
            for replica in self.replicas:
                if replica.death is None:
                    death = replica.find_death()
                    if death is not None:
                        self._bury(replica, death)

    def _bury(self, replica: Replica, death: str) -> None:
        replica.death = death
        num_alive = len(self.live_replicas())
        if num_alive:
            logger.error(
                "data-parallel replica %d died (%s); serving on %d of %d replicas",
                replica.index, death, num_alive, len(self.replicas),
            )
        else:
            logger.critical("data-parallel replica %d died (%s); no replica is left", replica.index, death)
        # Ends its loop if the worker died while the loop was idle, and reaps the worker.
        replica.engine.shutdown(timeout=REPLICA_SHUTDOWN_TIMEOUT)


def _shutdown_all(engines: list[AsyncLLMEngine], timeout: float | None = REPLICA_SHUTDOWN_TIMEOUT) -> None:
    threads = [threading.Thread(target=engine.shutdown, args=(timeout,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

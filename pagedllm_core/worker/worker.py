"""A worker: one device's model (or one tensor-parallel rank's shard of it), KV pool and runner, driven by step messages."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.distributed.group import init_tensor_parallel_group
from pagedllm_core.errors import ConfigError
from pagedllm_core.executor import wire
from pagedllm_core.executor.messages import ModelRunnerOutput, SchedulerOutput
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.model.model_info import ModelInfo, resolve_model_info
from pagedllm_core.registry import Registry, default_registry
from pagedllm_core.worker.model_setup import load_model_runner


@dataclass
class WorkerReady:
    """What a worker reports once its model is loaded: the engine sizes its block manager from it."""

    num_kv_blocks: int


class Worker:
    """Loads the model for ``config`` on construction; :meth:`execute_model` runs one step.

    Under tensor parallelism every rank has a worker. The driver (rank 0) gets the engine's messages
    and passes each to :meth:`run_driver_message`, which broadcasts it; the other ranks run the same
    messages in :meth:`follow`. All ranks therefore make the same collective calls in the same order.
    """

    def __init__(
        self,
        config: EngineConfig,
        registry: Registry | None = None,
        rank: int = 0,
        distributed_init_method: str | None = None,
        model_info: ModelInfo | None = None,
    ):
        info = model_info or resolve_model_info(config)
        local_ranks = config.tensor_parallel_size // config.nnodes
        if info.device.type == "cuda" and local_ranks > 1:
            # Under Ray each rank's process sees only the GPU of its bundle.
            torch.cuda.set_device(rank % min(local_ranks, torch.cuda.device_count()))
        if info.device.type == "cpu" and local_ranks > 1 and config.num_cpu_threads is None:
            # The node's ranks share its cores rather than each starting one thread per core.
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_ranks))
        self.tp = init_tensor_parallel_group(rank, config.tensor_parallel_size, distributed_init_method, info.device)
        loaded = load_model_runner(config, registry or default_registry(), info, self.tp)
        self.model_runner = loaded.runner
        self.ready = WorkerReady(loaded.num_kv_blocks)

    def execute_model(self, message: SchedulerOutput) -> ModelRunnerOutput:
        return self.model_runner.execute(message)

    def add_lora(self, lora_request: LoRARequest) -> bool:
        """Load and check an adapter (``ConfigError`` when it is unusable); False if it was loaded already."""
        return self._lora_manager().add_adapter(lora_request)

    def remove_lora(self, lora_int_id: int) -> bool:
        return self._lora_manager().remove_adapter(lora_int_id)

    def handle(self, message):
        """The reply to one message: a step's output, or the outcome of an adapter change."""
        if isinstance(message, wire.AddLoRA):
            try:
                return self.add_lora(message.lora_request)
            except ConfigError as error:  # an unusable adapter is the caller's error, not the worker's
                return wire.LoRAFailure(str(error))
        if isinstance(message, wire.RemoveLoRA):
            return self.remove_lora(message.lora_int_id)
        return self.execute_model(message)

    def run_driver_message(self, payload: bytes):
        """Rank 0: share the engine's encoded message with the other ranks, then run it; None for ShutdownWorker
        and KeepAlive, which have no reply."""
        if self.tp.world_size > 1:
            self.tp.broadcast_bytes(payload)
        message = wire.decode(payload)
        if isinstance(message, (wire.ShutdownWorker, wire.KeepAlive)):
            return None
        return self.handle(message)

    def follow(self) -> None:
        """Ranks other than 0: run each message the driver broadcasts until it says to shut down.

        A failure here ends the rank: the group's collectives would be out of step, so the driver's
        next collective fails too and the engine learns that a worker died.
        """
        while True:
            message = wire.decode(self.tp.broadcast_bytes(None))
            if isinstance(message, wire.ShutdownWorker):
                return
            if not isinstance(message, wire.KeepAlive):
                self.handle(message)

    def shutdown(self) -> None:
        self.tp.destroy()

    def _lora_manager(self):
        if self.model_runner.lora_manager is None:
            raise ConfigError("LoRA adapters need enable_lora=True (--enable-lora)")
        return self.model_runner.lora_manager

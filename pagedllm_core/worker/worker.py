"""A worker: one device's model, KV pool and runner, driven by step messages."""

from __future__ import annotations

from dataclasses import dataclass

from pagedllm_core.config import EngineConfig
from pagedllm_core.executor.messages import ModelRunnerOutput, SchedulerOutput
from pagedllm_core.model.model_info import resolve_model_info
from pagedllm_core.registry import Registry, default_registry
from pagedllm_core.worker.model_setup import load_model_runner


@dataclass
class WorkerReady:
    """What a worker reports once its model is loaded: the engine sizes its block manager from it."""

    num_kv_blocks: int


class Worker:
    """Loads the model for ``config`` on construction; :meth:`execute_model` runs one step."""

    def __init__(self, config: EngineConfig, registry: Registry | None = None):
        info = resolve_model_info(config)
        loaded = load_model_runner(config, registry or default_registry(), info)
        self.model_runner = loaded.runner
        self.ready = WorkerReady(loaded.num_kv_blocks)

    def execute_model(self, message: SchedulerOutput) -> ModelRunnerOutput:
        return self.model_runner.execute(message)

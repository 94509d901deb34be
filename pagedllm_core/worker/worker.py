"""A worker: one device's model, KV pool and runner, driven by step messages."""

from __future__ import annotations

from dataclasses import dataclass

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ConfigError
from pagedllm_core.executor.messages import ModelRunnerOutput, SchedulerOutput
from pagedllm_core.lora_request import LoRARequest
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

    def add_lora(self, lora_request: LoRARequest) -> bool:
        """Load and check an adapter (``ConfigError`` when it is unusable); False if it was loaded already."""
        return self._lora_manager().add_adapter(lora_request)

    def remove_lora(self, lora_int_id: int) -> bool:
        return self._lora_manager().remove_adapter(lora_int_id)

    def _lora_manager(self):
        if self.model_runner.lora_manager is None:
            raise ConfigError("LoRA adapters need enable_lora=True (--enable-lora)")
        return self.model_runner.lora_manager

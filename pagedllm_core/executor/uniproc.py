"""The ``uni`` executor: one worker in the engine's own process, called directly."""

from __future__ import annotations

from pagedllm_core.config import EngineConfig
from pagedllm_core.executor.base import Executor
from pagedllm_core.executor.messages import ModelRunnerOutput, SchedulerOutput
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.model.model_info import ModelInfo
from pagedllm_core.registry import Registry
from pagedllm_core.worker.worker import Worker


class UniProcExecutor(Executor):
    """Runs every step on an in-process :class:`Worker`; messages are passed by reference, never copied."""

    def __init__(self, config: EngineConfig, registry: Registry, model_info: ModelInfo | None = None):
        self.worker = Worker(config, registry, model_info=model_info)
        self.num_kv_blocks = self.worker.ready.num_kv_blocks

    def execute_model(self, message: SchedulerOutput) -> ModelRunnerOutput:
        return self.worker.execute_model(message)

    def add_lora(self, lora_request: LoRARequest) -> bool:
        return self.worker.add_lora(lora_request)

    def remove_lora(self, lora_int_id: int) -> bool:
        return self.worker.remove_lora(lora_int_id)

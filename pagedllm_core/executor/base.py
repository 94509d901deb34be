"""The executor contract: the engine hands it one step message and gets the step's output back."""

from __future__ import annotations

from abc import ABC, abstractmethod

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import PagedLLMError
from pagedllm_core.executor.messages import ModelRunnerOutput, SchedulerOutput
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.model.model_info import ModelInfo
from pagedllm_core.registry import Registry


class WorkerDiedError(PagedLLMError):
    """A worker process ended or failed, so the step (and every request in it) cannot complete."""


class Executor(ABC):
    """Runs the engine's steps on its workers: in this process, or in worker processes it starts.

    Whatever it does, the engine sees one call per step, :meth:`execute_model`, with a plain
    :class:`SchedulerOutput`; the workers hold the model, the KV pool and the persistent batch.
    """

    num_kv_blocks: int
    """KV blocks each worker's pool holds; the engine's block manager hands out exactly these."""

    @abstractmethod
    def execute_model(self, message: SchedulerOutput) -> ModelRunnerOutput:
        """Run one step; raises :class:`WorkerDiedError` when a worker is gone."""

    @abstractmethod
    def add_lora(self, lora_request: LoRARequest) -> bool:
        """Load an adapter on every worker, raising ``ConfigError`` when it is unusable; False if loaded already."""

    @abstractmethod
    def remove_lora(self, lora_int_id: int) -> bool:
        """Drop an adapter on every worker; False if it was not loaded."""

    def shutdown(self) -> None:
        """Stop the workers (idempotent); the executor cannot run steps afterwards."""


def build_executor(config: EngineConfig, registry: Registry, model_info: ModelInfo) -> Executor:
    """The executor named by ``config.distributed_executor_backend``; an in-process worker reuses the
    engine's ``model_info`` (and with it the parse of a GGUF file) instead of resolving it again."""
    if config.distributed_executor_backend == "mp":
        from pagedllm_core.executor.multiproc import MultiprocExecutor

        return MultiprocExecutor(config)
    if config.distributed_executor_backend == "ray":
        from pagedllm_core.executor.ray_executor import RayExecutor

        return RayExecutor(config)
    from pagedllm_core.executor.uniproc import UniProcExecutor

    return UniProcExecutor(config, registry, model_info)

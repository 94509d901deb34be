"""What the executors whose workers live in other processes (``mp``, ``ray``) share: every call is a
message to the driver rank, and an adapter the workers refuse comes back as a ``LoRAFailure``."""

from __future__ import annotations

from abc import abstractmethod

from pagedllm_core.errors import ConfigError
from pagedllm_core.executor import wire
from pagedllm_core.executor.base import Executor
from pagedllm_core.executor.messages import ModelRunnerOutput, SchedulerOutput
from pagedllm_core.lora_request import LoRARequest


class RemoteExecutor(Executor):
    """An executor that sends each step (and each adapter change) to rank 0 as one message and waits for
    its reply; subclasses say how, in :meth:`_call`."""

    def execute_model(self, message: SchedulerOutput) -> ModelRunnerOutput:
        return self._call(message)

    def add_lora(self, lora_request: LoRARequest) -> bool:
        reply = self._call(wire.AddLoRA(lora_request))
        if isinstance(reply, wire.LoRAFailure):
            raise ConfigError(reply.message)
        return reply

    def remove_lora(self, lora_int_id: int) -> bool:
        return self._call(wire.RemoveLoRA(lora_int_id))

    @abstractmethod
    def _call(self, message):
        """Send ``message`` to rank 0 and return its decoded reply; :class:`WorkerDiedError` when a worker is gone."""

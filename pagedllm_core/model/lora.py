"""The contract of LoRA adapter managers (registered through ``register_lora_managers``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.lora_request import LoRARequest


class LoRAManager(ABC):
    """Loads adapters and adds each token's adapter delta to the projections it wraps.

    The worker builds the manager chosen by ``EngineConfig.lora_manager`` once the model is loaded
    (and prepacked), when ``enable_lora`` is set; the manager wraps the linear layers it serves.
    Adapters are named by ``LoRARequest.lora_int_id`` (0 = none), so one step's batch can mix
    requests that use different adapters, or none. The engine never schedules more than
    ``config.max_loras`` distinct adapters in a step.
    """

    def __init__(self, model: torch.nn.Module, config: EngineConfig, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.config = config
        self.device = device
        self.dtype = dtype

    @abstractmethod
    def add_adapter(self, lora_request: LoRARequest) -> bool:
        """Load and check the adapter (raise ``ConfigError`` naming what is wrong); False if already loaded."""

    @abstractmethod
    def remove_adapter(self, lora_int_id: int) -> bool:
        """Drop a loaded adapter; False if it was not loaded. Sequences still using it reload it when they run."""

    @abstractmethod
    def list_adapters(self) -> set[int]:
        """Ids of the adapters loaded now."""

    @abstractmethod
    def set_step_adapters(self, token_lora_ids: torch.Tensor, lora_requests: Mapping[int, LoRARequest]) -> None:
        """Before a step's forward: ``token_lora_ids`` ``[num_tokens]`` is the adapter id of every token of the
        flattened batch (0: base model); ``lora_requests`` has the request of every id in it, to load one
        that is not loaded (evicted, or removed while its sequences ran)."""

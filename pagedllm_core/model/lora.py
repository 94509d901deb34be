"""The contract of LoRA adapter managers (registered through ``register_lora_managers``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class LoRAManager(ABC):
    """Loads adapters and adds each token's adapter delta to the projections it wraps.

    Adapters are identified by small integer ids (0 = none) so a step's batch can mix requests
    that use different adapters, or none.
    """

    def __init__(self, model: torch.nn.Module, max_loras: int):
        self.model = model
        self.max_loras = max_loras

    @abstractmethod
    def add_adapter(self, name: str, path: str) -> int:
        """Load the adapter at ``path`` (a PEFT directory); returns its id."""

    @abstractmethod
    def remove_adapter(self, adapter_id: int) -> None:
        """Unload an adapter and free its slot."""

    @abstractmethod
    def set_step_adapters(self, token_adapter_ids: torch.Tensor) -> None:
        """Before a step's forward: ``[num_tokens]`` adapter id of every token in the flattened batch."""

"""Which LoRA adapter a request runs with (vLLM's ``LoRARequest``)."""

from __future__ import annotations

from dataclasses import dataclass

from pagedllm_core.errors import ConfigError


@dataclass(frozen=True)
class LoRARequest:
    """An adapter for a request: ``LoRARequest("sql-lora", 1, "/path/to/adapter")``.

    ``lora_int_id`` (1 or more) is the adapter's identity inside the engine: the worker keys its
    loaded weights by it and the prefix cache keeps its blocks apart from every other adapter's.
    ``lora_path`` is a directory in peft's format (``adapter_config.json`` and
    ``adapter_model.safetensors``). ``base_model_name`` is only reported (``/v1/models`` ``parent``).
    """

    lora_name: str
    lora_int_id: int
    lora_path: str
    base_model_name: str | None = None

    def __post_init__(self):
        if not isinstance(self.lora_name, str) or not self.lora_name:
            raise ConfigError(f"lora_name must be a non-empty string; got {self.lora_name!r}")
        if isinstance(self.lora_int_id, bool) or not isinstance(self.lora_int_id, int) or self.lora_int_id < 1:
            raise ConfigError(f"lora_int_id must be an integer of at least 1; got {self.lora_int_id!r}")
        if not isinstance(self.lora_path, str) or not self.lora_path:
            raise ConfigError(f"lora_path must be a non-empty path; got {self.lora_path!r}")

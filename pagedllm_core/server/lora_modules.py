"""LoRA adapters the server serves by name: ``--lora-modules`` entries and the run-time updating switch."""

from __future__ import annotations

import itertools
import json
import os
import threading

from pydantic import BaseModel, ConfigDict, Field

from pagedllm_core.errors import ConfigError
from pagedllm_core.lora_request import LoRARequest
# Either of these set to true (1, true, yes) allows run-time adapter changes, as --allow-runtime-lora-updating does.
RUNTIME_UPDATING_ENVS = ("PAGEDLLM_ALLOW_RUNTIME_LORA_UPDATING", "VLLM_ALLOW_RUNTIME_LORA_UPDATING")


class LoRAModulePath(BaseModel):
    """One ``--lora-modules`` entry: ``name=path`` or ``{"name": .., "path": .., "base_model_name": ..}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    base_model_name: str | None = None


def parse_lora_module(value: str) -> LoRAModulePath:
    """An entry of ``--lora-modules``; ``ConfigError`` naming the accepted forms otherwise."""
    try:
        if value.lstrip().startswith("{"):
            return LoRAModulePath(**json.loads(value))
        name, separator, path = value.partition("=")
        if separator:
            return LoRAModulePath(name=name, path=path)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"--lora-modules: invalid entry {value!r}: {error}") from None
    raise ConfigError(
        f"--lora-modules: expected name=path or a JSON object with name, path (and base_model_name); got {value!r}"
    )


def runtime_updating_allowed(flag: bool) -> bool:
    return flag or any(os.environ.get(env, "").strip().lower() in ("1", "true", "yes") for env in RUNTIME_UPDATING_ENVS)


class ServedLoRAs:
    """The adapters the server serves by name; each gets its own ``lora_int_id``. Thread-safe."""

    def __init__(self):
        self._by_name: dict[str, LoRARequest] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def new_request(self, name: str, path: str, base_model_name: str | None) -> LoRARequest:
        with self._lock:
            return LoRARequest(name, next(self._ids), path, base_model_name)

    def add(self, lora_request: LoRARequest) -> None:
        with self._lock:
            self._by_name[lora_request.lora_name] = lora_request

    def remove(self, name: str) -> LoRARequest | None:
        with self._lock:
            return self._by_name.pop(name, None)

    def get(self, name: str | None) -> LoRARequest | None:
        return None if name is None else self._by_name.get(name)

    def all(self) -> list[LoRARequest]:
        with self._lock:
            return list(self._by_name.values())

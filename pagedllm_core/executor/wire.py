"""Encoding step messages for a pipe between the engine and its worker processes.

Messages are pickled, and unpickled by an unpickler that builds only the message types listed
here (and Python's built-in containers): a process that receives something else, whatever wrote
it, refuses it instead of running code. Requests from clients never reach a pipe as bytes; the
engine builds every message from values it validated.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass

from pagedllm_core.config import EngineConfig
from pagedllm_core.executor import messages
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.sampling_params import RequestOutputKind, SamplingParams
from pagedllm_core.structured_outputs import StructuredOutputsParams


@dataclass
class WorkerFailure:
    """A worker's reply when it could not start or run a step: the error, as text, and whether it was a
    ``ConfigError`` (the engine raises it as one, as if the worker ran in its own process)."""

    message: str
    is_config_error: bool = False


@dataclass
class ShutdownWorker:
    """Tells a worker process to exit."""


@dataclass
class StartWorker:
    """The first message to a worker process: the config it loads the model for, its tensor-parallel
    rank, and where the ranks meet (``file://`` or ``tcp://``; None with one rank)."""

    config: EngineConfig
    rank: int = 0
    distributed_init_method: str | None = None


@dataclass
class KeepAlive:
    """What the driver rank broadcasts while the engine is idle, so the other ranks' wait never times out."""


@dataclass
class AddLoRA:
    """Tells a worker to load (and check) an adapter before requests use it; the reply is ``True`` or a
    :class:`LoRAFailure`."""

    lora_request: LoRARequest


@dataclass
class RemoveLoRA:
    """Tells a worker to drop a loaded adapter; the reply says whether it was loaded."""

    lora_int_id: int


@dataclass
class LoRAFailure:
    """A worker's reply when an adapter is unusable (bad path, config, rank or targets): the error, as text."""

    message: str


def _allowed_classes() -> dict[tuple[str, str], type]:
    from pagedllm_core.spec_decode.config import SpeculativeConfig
    from pagedllm_core.worker.worker import WorkerReady

    classes = [
        messages.SchedulerOutput,
        messages.NewSequenceData,
        messages.CachedSequenceData,
        messages.ModelRunnerOutput,
        messages.TokenLogprobs,
        SamplingParams,
        LoRARequest,
        AddLoRA,
        RemoveLoRA,
        LoRAFailure,
        RequestOutputKind,
        StructuredOutputsParams,
        WorkerReady,
        WorkerFailure,
        ShutdownWorker,
        StartWorker,
        KeepAlive,
        EngineConfig,
        SpeculativeConfig,
    ]
    allowed = {(cls.__module__, cls.__qualname__): cls for cls in classes}
    # How pickle rebuilds plain objects, sets and frozensets; pydantic models rebuild through copyreg too.
    allowed[("copyreg", "_reconstructor")] = __import__("copyreg")._reconstructor
    allowed[("builtins", "object")] = object
    allowed[("builtins", "set")] = set
    allowed[("builtins", "frozenset")] = frozenset
    allowed[("pydantic.types", "ByteSize")] = __import__("pydantic").ByteSize
    return allowed


class _MessageUnpickler(pickle.Unpickler):
    _allowed: dict[tuple[str, str], type] | None = None

    def find_class(self, module: str, name: str):
        if _MessageUnpickler._allowed is None:
            _MessageUnpickler._allowed = _allowed_classes()
        found = _MessageUnpickler._allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to build {module}.{name}: not a step message type")
        return found


def encode(message: object) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def decode(payload: bytes) -> object:
    return _MessageUnpickler(io.BytesIO(payload)).load()


# The two replyless messages, encoded once: the driver compares payloads with them instead of decoding again.
SHUTDOWN_WORKER = encode(ShutdownWorker())
KEEP_ALIVE = encode(KeepAlive())

"""Reading a peft LoRA adapter from disk: its config (checked with peft's ``LoraConfig``) and its weights
(safetensors only), mapped onto the model's linear layers."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch

from pagedllm_core.errors import ConfigError
from pagedllm_core.lora_request import LoRARequest

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


@dataclass
class LoRAWeights:
    """One projection's low-rank update ``delta(x) = (x @ lora_a.T) @ lora_b.T``, scaling folded into ``lora_b``."""

    lora_a: torch.Tensor  # [rank, in_features]
    lora_b: torch.Tensor  # [out_features, rank]


@dataclass
class LoRAAdapter:
    """A loaded adapter: its request, rank and the weights of every projection it targets, keyed by
    the projection's checkpoint path (``model.layers.0.self_attn.q_proj``)."""

    lora_request: LoRARequest
    rank: int
    scaling: float
    weights: dict[str, LoRAWeights]
    # Tensors besides lora_A/lora_B pairs (whole layers peft saved beside them): never served.
    other_tensors: list[str]

    @property
    def num_bytes(self) -> int:
        return sum(w.lora_a.nbytes + w.lora_b.nbytes for w in self.weights.values())


def read_lora_config(path: str):
    """The adapter's ``adapter_config.json`` as peft's ``LoraConfig``; ``ConfigError`` when it is missing or invalid."""
    from peft import LoraConfig

    if not os.path.isdir(path):
        raise ConfigError(f"LoRA adapter path {path!r} is not a directory (expected peft's adapter_config.json and "
                          f"{WEIGHTS_FILE} in it)")
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise ConfigError(f"LoRA adapter {path!r} has no {CONFIG_FILE}")
    try:
        with open(config_path, encoding="utf-8") as handle:
            values = json.load(handle)
    except (OSError, ValueError) as error:
        raise ConfigError(f"LoRA adapter {path!r}: {CONFIG_FILE} is not valid JSON ({error})") from None
    if not isinstance(values, dict) or values.get("peft_type", "LORA") != "LORA":
        found = values.get("peft_type") if isinstance(values, dict) else type(values).__name__
        raise ConfigError(
            f"LoRA adapter {path!r}: {CONFIG_FILE} must describe a peft LORA adapter (peft_type {found!r})"
        )
    try:
        return LoraConfig.from_pretrained(path)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"LoRA adapter {path!r}: invalid {CONFIG_FILE}: {error}") from None


def check_lora_config(config, path: str, max_lora_rank: int) -> list[str]:
    """What in a valid peft config this engine cannot serve; empty when it can."""
    problems = []
    if not isinstance(config.r, int) or config.r < 1:
        problems.append(f"r must be a positive integer (got {config.r!r})")
    elif config.r > max_lora_rank:
        problems.append(f"rank r={config.r} is above max_lora_rank={max_lora_rank} (raise --max-lora-rank)")
    if getattr(config, "use_dora", False):
        problems.append("use_dora=True (DoRA) is not supported")
    if config.bias != "none":
        problems.append(f"bias={config.bias!r} is not supported (only 'none')")
    if config.modules_to_save:
        problems.append(f"modules_to_save {config.modules_to_save} is not supported (only LoRA deltas)")
    if getattr(config, "rank_pattern", None) or getattr(config, "alpha_pattern", None):
        problems.append("rank_pattern/alpha_pattern (per-module ranks) are not supported")
    if getattr(config, "layer_replication", None):
        problems.append("layer_replication is not supported")
    return problems


def load_adapter(lora_request: LoRARequest, max_lora_rank: int) -> LoRAAdapter:
    """Read and check the adapter at ``lora_request.lora_path`` (weights on the CPU, float32, scaling folded in)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = lora_request.lora_path
    config = read_lora_config(path)
    problems = check_lora_config(config, path, max_lora_rank)
    if problems:
        raise ConfigError(
            f"LoRA adapter {lora_request.lora_name!r} at {path!r} cannot be served: {'; '.join(problems)}"
        )
    weights_path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        pickled = [name for name in ("adapter_model.bin", "adapter_model.pt") if os.path.isfile(f"{path}/{name}")]
        hint = f" ({pickled[0]} is pickle, which is never loaded; save with safe_serialization=True)" if pickled else ""
        raise ConfigError(f"LoRA adapter {path!r} has no {WEIGHTS_FILE}{hint}")
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ConfigError(f"LoRA adapter {path!r}: cannot read {WEIGHTS_FILE}: {error}") from None
    scaling = config.lora_alpha / (math.sqrt(config.r) if config.use_rslora else config.r)
    weights, other_tensors = _pair_weights(tensors, path, config.r, scaling)
    return LoRAAdapter(lora_request, config.r, scaling, weights, other_tensors)


def _pair_weights(
    tensors: dict[str, torch.Tensor], path: str, rank: int, scaling: float
) -> tuple[dict[str, LoRAWeights], list[str]]:
    """Match each projection's ``lora_A`` with its ``lora_B`` and check their ranks; also returns the
    names of the other tensors."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    other_tensors = []
    for key, tensor in tensors.items():
        name = key.removeprefix(_PEFT_PREFIX)
        for half in ("lora_A", "lora_B"):
            suffix = f".{half}.weight"
            if name.endswith(suffix):
                halves.setdefault(name.removesuffix(suffix), {})[half] = tensor
                break
        else:
            other_tensors.append(key)
    weights = {}
    for module, pair in halves.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise ConfigError(f"LoRA adapter {path!r}: {module} has only {', '.join(pair)}")
        lora_a, lora_b = pair["lora_A"].float(), pair["lora_B"].float()
        if lora_a.dim() != 2 or lora_b.dim() != 2 or lora_a.shape[0] != rank or lora_b.shape[1] != rank:
            raise ConfigError(
                f"LoRA adapter {path!r}: {module} has lora_A {tuple(lora_a.shape)} and lora_B "
                f"{tuple(lora_b.shape)}, not rank r={rank} as its config says"
            )
        weights[module] = LoRAWeights(lora_a.contiguous(), (lora_b * scaling).contiguous())
    if not weights:
        raise ConfigError(f"LoRA adapter {path!r}: {WEIGHTS_FILE} holds no lora_A/lora_B weights")
    return weights, other_tensors

"""The ``lora`` manager: peft adapters in an LRU of loaded adapters, ``max_loras`` slots in every wrapped layer."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from pagedllm_core.errors import ConfigError
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.model.lora import LoRAManager
from pagedllm_lora.adapter import LoRAAdapter, load_adapter
from pagedllm_lora.layer import LoRALinear
from pagedllm_lora.ops import select_op
from pagedllm_lora.step_state import LoRAStepState

logger = logging.getLogger(__name__)


class PunicaLoRAManager(LoRAManager):
    """Serves many adapters on one model, Punica/S-LoRA style.

    At start-up every linear layer of the decoder (dense, prepacked or quantized) is wrapped in a
    :class:`LoRALinear` with ``max_loras`` slots of rank ``max_lora_rank``. Loaded adapters (checked
    against the model when loaded) are kept, least recently used dropped first, up to
    ``max_cpu_loras``; before each step the step's adapters are copied into slots (a slot whose
    adapter the step does not use is reused, least recently used first) and every wrapped layer then
    adds each token's delta from its slot in one batched op.
    """

    def __init__(self, model: nn.Module, config, device: torch.device, dtype: torch.dtype):
        super().__init__(model, config, device, dtype)
        self.num_slots = config.max_loras
        self.max_cpu_loras = config.max_cpu_loras or config.max_loras
        self.state = LoRAStepState()
        self.layers = _wrap_linear_layers(model, self.num_slots, config.max_lora_rank, self.state,
                                          select_op(device), device, dtype)
        # projection path (model.layers.0.self_attn.q_proj) -> (wrapped layer path, projection index)
        self.targets = {
            _projection_path(path, name): (path, index)
            for path, layer in self.layers.items()
            for index, name in enumerate(layer.projection_names)
        }
        self._adapters: OrderedDict[int, LoRAAdapter] = OrderedDict()  # least recently used first
        self._slot_of: OrderedDict[int, int] = OrderedDict()  # lora id -> slot, least recently used first
        logger.info(
            "LoRA: %d layers wrapped, %d slots of rank %d", len(self.layers), self.num_slots, config.max_lora_rank
        )

    @property
    def target_projections(self) -> list[str]:
        """The projection names an adapter may target (``q_proj``, ``gate_proj``, ...)."""
        return sorted({path.rsplit(".", 1)[-1] for path in self.targets})

    def add_adapter(self, lora_request: LoRARequest) -> bool:
        if lora_request.lora_int_id in self._adapters:
            self._adapters.move_to_end(lora_request.lora_int_id)
            return False
        adapter = load_adapter(lora_request, self.config.max_lora_rank)
        self._check_targets(adapter)
        self._adapters[lora_request.lora_int_id] = adapter
        while len(self._adapters) > self.max_cpu_loras:
            evicted, _ = self._adapters.popitem(last=False)
            logger.info("LoRA: adapter %d dropped from memory (max_cpu_loras=%d)", evicted, self.max_cpu_loras)
        return True

    def remove_adapter(self, lora_int_id: int) -> bool:
        slot = self._slot_of.pop(lora_int_id, None)
        if slot is not None:
            for layer in self.layers.values():
                layer.set_slot(slot, {})
        return self._adapters.pop(lora_int_id, None) is not None or slot is not None

    def list_adapters(self) -> set[int]:
        return set(self._adapters) | set(self._slot_of)

    def set_step_adapters(self, token_lora_ids: torch.Tensor, lora_requests: Mapping[int, LoRARequest]) -> None:
        step_ids = set(lora_requests)
        if not step_ids:
            self.state.update(None, self.device, self.dtype)
            return
        if len(step_ids) > self.num_slots:
            raise ConfigError(f"a step uses {len(step_ids)} adapters but max_loras is {self.num_slots}")
        slot_by_id = torch.full((max(step_ids) + 1,), -1, dtype=torch.int64)
        for lora_int_id in sorted(step_ids):
            slot_by_id[lora_int_id] = self._activate(lora_requests[lora_int_id], step_ids)
        self.state.update(slot_by_id[token_lora_ids], self.device, self.dtype)  # id 0 (base model) -> slot -1

    def _activate(self, lora_request: LoRARequest, step_ids: set[int]) -> int:
        """The slot holding the adapter, copying it into one (the lowest free, else the least recently
        used one this step does not need) when it is not in a slot yet."""
        lora_int_id = lora_request.lora_int_id
        if lora_int_id in self._slot_of:
            self._slot_of.move_to_end(lora_int_id)
            return self._slot_of[lora_int_id]
        self.add_adapter(lora_request)
        adapter = self._adapters[lora_int_id]
        used = set(self._slot_of.values())
        free = [slot for slot in range(self.num_slots) if slot not in used]
        if free:
            slot = free[0]
        else:
            victim = next(i for i in self._slot_of if i not in step_ids)
            slot = self._slot_of.pop(victim)
        pieces: dict[str, dict] = {}
        for projection, weights in adapter.weights.items():
            path, index = self.targets[projection]
            pieces.setdefault(path, {})[self.layers[path].projection_names[index]] = weights
        for path, layer in self.layers.items():
            layer.set_slot(slot, pieces.get(path, {}))
        self._slot_of[lora_int_id] = slot
        return slot

    def _check_targets(self, adapter: LoRAAdapter) -> None:
        """The adapter's projections must exist in this model with the shapes its weights have."""
        path = adapter.lora_request.lora_path
        unknown = sorted(name for name in adapter.weights if name not in self.targets)
        if unknown:
            raise ConfigError(
                f"LoRA adapter {adapter.lora_request.lora_name!r} at {path!r} targets modules this model lacks or "
                f"LoRA cannot wrap: {', '.join(unknown[:4])}{' ...' if len(unknown) > 4 else ''}; adapters may "
                f"target: {', '.join(self.target_projections)}"
            )
        if adapter.other_tensors:
            raise ConfigError(
                f"LoRA adapter {adapter.lora_request.lora_name!r} at {path!r} holds tensors other than LoRA weights "
                f"({', '.join(adapter.other_tensors[:3])}); only lora_A/lora_B pairs of linear layers are served"
            )
        for name, weights in adapter.weights.items():
            layer_path, index = self.targets[name]
            layer = self.layers[layer_path]
            expected = (layer.in_features, layer.output_sizes[index])
            found = (weights.lora_a.shape[1], weights.lora_b.shape[0])
            if found != expected:
                raise ConfigError(
                    f"LoRA adapter {adapter.lora_request.lora_name!r}: {name} maps {found[0]} -> {found[1]} features "
                    f"but this model's layer maps {expected[0]} -> {expected[1]}; the adapter is for another model"
                )


def _wrap_linear_layers(model: nn.Module, num_slots: int, max_lora_rank: int, state: LoRAStepState, op,
                        device: torch.device, dtype: torch.dtype) -> dict[str, LoRALinear]:
    """Wrap every linear layer of the decoder blocks (not the head); returns them by path."""
    inverse_merged: dict[str, list[str]] = {}
    for projection, (merged, index) in getattr(model, "merged_projections", {}).items():
        names = inverse_merged.setdefault(merged, [])
        names.extend([""] * (index + 1 - len(names)))
        names[index] = projection
    wrapped = {}
    for parent_path, parent in list(model.named_modules()):
        if ".layers." not in f".{parent_path}.":
            continue
        for name, child in list(parent.named_children()):
            if not hasattr(child, "in_features") or not hasattr(child, "out_features") or isinstance(child, LoRALinear):
                continue
            names = inverse_merged.get(name, [name])
            if len(names) != len(getattr(child, "output_sizes", [child.out_features])):
                continue
            layer = LoRALinear(child, names, num_slots, max_lora_rank, state, op, device, dtype)
            setattr(parent, name, layer)
            wrapped[f"{parent_path}.{name}"] = layer
    return wrapped


def _projection_path(layer_path: str, projection_name: str) -> str:
    return f"{layer_path.rsplit('.', 1)[0]}.{projection_name}"

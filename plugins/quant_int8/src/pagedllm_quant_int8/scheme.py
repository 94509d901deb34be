"""Reading a compressed-tensors ``quantization_config``: is it W8A8 int8, and which layers does it cover."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# What this plugin runs, as compressed-tensors spells it (llm-compressor's "W8A8" preset scheme).
WEIGHT_STRATEGIES = ("channel", "tensor")
ACTIVATION_STRATEGY = "token"
FORMATS = ("int-quantized",)


@dataclass(frozen=True)
class W8A8Scheme:
    """The layers a compressed-tensors W8A8 int8 checkpoint quantized: every linear layer its groups
    target (``Linear`` or ``re:`` patterns) that its ``ignore`` list does not name."""

    targets: tuple[str, ...]
    ignore: tuple[str, ...]

    def quantizes(self, module_name: str) -> bool:
        """Whether the checkpoint's linear layer ``module_name`` (e.g. ``model.layers.0.mlp.down_proj``) is int8."""
        if any(_matches(pattern, module_name) for pattern in self.ignore):
            return False
        return any(target == "Linear" or _matches(target, module_name) for target in self.targets)


def _matches(pattern: str, module_name: str) -> bool:
    if pattern.startswith("re:"):
        return re.match(pattern[3:], module_name) is not None
    return module_name == pattern or module_name.endswith(f".{pattern}")


def parse_w8a8_scheme(quantization_config: dict[str, Any] | None) -> tuple[W8A8Scheme | None, list[str]]:
    """The scheme of a W8A8 int8 compressed-tensors config, or None and why the config is not one."""
    if quantization_config is None:
        return None, ["the checkpoint has no quantization_config"]
    if str(quantization_config.get("quant_method", "")).lower() != "compressed-tensors":
        return None, [f"quant_method is {quantization_config.get('quant_method')!r}, not 'compressed-tensors'"]
    reasons = []
    if quantization_config.get("format") not in FORMATS:
        reasons.append(f"format {quantization_config.get('format')!r} unsupported ({', '.join(FORMATS)} is)")
    groups = quantization_config.get("config_groups") or {}
    if not groups:
        reasons.append("config_groups is empty")
    targets: list[str] = []
    for name, group in groups.items():
        reasons += [f"{name}: {reason}" for reason in _group_reasons(group)]
        targets += group.get("targets") or []
    if reasons:
        return None, reasons
    return W8A8Scheme(tuple(targets), tuple(quantization_config.get("ignore") or ())), []


def _group_reasons(group: dict[str, Any]) -> list[str]:
    reasons = []
    weights = group.get("weights") or {}
    if (weights.get("num_bits"), weights.get("type"), weights.get("symmetric")) != (8, "int", True):
        reasons.append("weights are not symmetric 8-bit int")
    if weights.get("strategy") not in WEIGHT_STRATEGIES:
        reasons.append(f"weight strategy {weights.get('strategy')!r} unsupported ({', '.join(WEIGHT_STRATEGIES)} are)")
    activations = group.get("input_activations")
    if activations is None:
        reasons.append("activations are not quantized (weight-only int8 is not W8A8)")
        return reasons
    if (activations.get("num_bits"), activations.get("type"), activations.get("symmetric")) != (8, "int", True):
        reasons.append("activations are not symmetric 8-bit int")
    if not activations.get("dynamic") or activations.get("strategy") != ACTIVATION_STRATEGY:
        reasons.append(
            f"activations are {'dynamic' if activations.get('dynamic') else 'static'} per "
            f"{activations.get('strategy')!r}; only dynamic per-token is supported"
        )
    return reasons

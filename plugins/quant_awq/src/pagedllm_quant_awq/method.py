"""The ``awq`` quantization method: which layers run from AWQ's 4-bit weights, read from ``quantization_config``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.models import resolve_model_class
from pagedllm_core.model.quantization import QuantizationMethod, QuantizationTarget
from pagedllm_quant_awq.layer import AWQLinear

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AWQConfig:
    """The fields of an AWQ checkpoint's ``quantization_config`` (as AutoAWQ and llm-compressor's export write it)."""

    bits: int
    group_size: int
    zero_point: bool
    version: str
    modules_to_not_convert: tuple[str, ...]

    @classmethod
    def from_hf_config(cls, hf_config) -> AWQConfig | None:
        """None when the config has no ``quantization_config`` naming ``awq``."""
        config = getattr(hf_config, "quantization_config", None)
        if config is not None and not isinstance(config, dict):
            config = config.to_dict()
        if not config or str(config.get("quant_method", "")).lower() != "awq":
            return None
        return cls(
            bits=int(config.get("bits", config.get("w_bit", 4))),
            group_size=int(config.get("group_size", config.get("q_group_size", 128))),
            zero_point=bool(config.get("zero_point", True)),
            version=str(config.get("version", "gemm")).lower(),
            modules_to_not_convert=tuple(config.get("modules_to_not_convert") or ()),
        )

    def unsupported_reasons(self) -> list[str]:
        reasons = []
        if self.bits != 4:
            reasons.append(f"only 4-bit AWQ is supported, the checkpoint has {self.bits} bits")
        if not self.zero_point:
            reasons.append("only AWQ with zero points (zero_point: true, AutoAWQ's GEMM format) is supported")
        if self.version != "gemm":
            reasons.append(f"only AWQ's 'gemm' packing is supported, the checkpoint has version {self.version!r}")
        if self.group_size <= 0:
            reasons.append(f"group_size must be positive (per-channel -1 is not supported), got {self.group_size}")
        return reasons


class AWQQuantization(QuantizationMethod):
    """Gives every linear layer the checkpoint stores as ``qweight``/``qzeros``/``scales`` an :class:`AWQLinear`;
    others (``lm_head``, ``modules_to_not_convert``) stay dense.

    On a CPU the layers run the plugin's C++ kernel, on a GPU its Triton kernel.
    """

    @classmethod
    def unsupported_reasons(cls, target: QuantizationTarget) -> list[str]:
        awq = AWQConfig.from_hf_config(target.hf_config)
        if awq is None:
            return ["the checkpoint's config.json has no quantization_config with quant_method 'awq'"]
        reasons = awq.unsupported_reasons()
        if target.device.type not in ("cpu", "cuda"):
            reasons.append(f"its kernels run on cpu (C++) and cuda (Triton), not {target.device.type}")
        if target.device.type == "cuda":
            try:
                import triton  # noqa: F401
            except ImportError:
                reasons.append("on a GPU it needs triton, which is not installed")
        return reasons

    def __init__(self, target: QuantizationTarget):
        super().__init__(target)
        self.config = AWQConfig.from_hf_config(target.hf_config)
        self._checkpoint_names = _tensor_names(target)
        merged = resolve_model_class(target.hf_config).merged_projections
        # merged module name -> its checkpoint projections in order, e.g. qkv_proj -> [q_proj, k_proj, v_proj]
        self._projections: dict[str, list[str]] = {}
        for projection, (merged_name, index) in sorted(merged.items(), key=lambda item: item[1][1]):
            self._projections.setdefault(merged_name, []).insert(index, projection)

    def create_weights(self, prefix: str, input_size: int, output_sizes: list[int], bias: bool) -> AWQLinear | None:
        modules = self._checkpoint_modules(prefix, len(output_sizes))
        quantized = [f"{module}.qweight" in self._checkpoint_names for module in modules]
        if not any(quantized) or any(skip in prefix for skip in self.config.modules_to_not_convert):
            return None
        if not all(quantized):
            raise ModelLoadError(f"AWQ checkpoint quantizes only some projections of {prefix}: {modules}")
        return AWQLinear(input_size, output_sizes, self.config.group_size, bias)

    def _checkpoint_modules(self, prefix: str, num_projections: int) -> list[str]:
        """The checkpoint's module names for the layer (one, or each projection of a merged layer)."""
        parent, _, leaf = prefix.rpartition(".")
        projections = self._projections.get(leaf, [leaf]) if num_projections > 1 else [leaf]
        return [f"{parent}.{projection}" if parent else projection for projection in projections]

    def process_weights_after_loading(self, model: nn.Module) -> int:
        cpu_kernels = None
        if self.target.device.type == "cpu":
            from pagedllm_quant_awq.kernels import load_kernels

            cpu_kernels = load_kernels()
        layers = [module for module in model.modules() if isinstance(module, AWQLinear)]
        for layer in layers:
            layer.prepare(cpu_kernels)
        return len(layers)


def _tensor_names(target: QuantizationTarget) -> set[str]:
    """Every tensor name in the checkpoint's safetensors files (read from their headers only)."""
    from safetensors import safe_open

    names: set[str] = set()
    for path in target.source.safetensors_files():
        with safe_open(path, framework="pt", device="cpu") as checkpoint:
            names.update(checkpoint.keys())
    return names

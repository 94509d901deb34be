"""The ``compressed-tensors`` quantization method: W8A8 int8 checkpoints as llm-compressor writes them."""

from __future__ import annotations

import torch
from torch import nn

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.models import resolve_model_class
from pagedllm_core.model.quantization import QuantizationMethod, QuantizationTarget
from pagedllm_quant_int8.layer import Int8Linear
from pagedllm_quant_int8.scheme import W8A8Scheme, parse_w8a8_scheme


def quantization_config_of(hf_config) -> dict | None:
    config = getattr(hf_config, "quantization_config", None)
    if config is not None and not isinstance(config, dict):
        config = config.to_dict()
    return config


def checkpoint_projections(hf_config) -> dict[str, list[str]]:
    """Merged module name -> its checkpoint projections in order, e.g. ``qkv_proj`` -> ``[q_proj, k_proj, v_proj]``."""
    projections: dict[str, list[str]] = {}
    merged = resolve_model_class(hf_config).merged_projections
    for projection, (merged_name, index) in sorted(merged.items(), key=lambda item: item[1][1]):
        projections.setdefault(merged_name, []).insert(index, projection)
    return projections


def checkpoint_module_names(prefix: str, num_projections: int, projections: dict[str, list[str]]) -> list[str]:
    """The checkpoint's module names of the layer ``prefix`` (one, or each projection of a merged layer)."""
    parent, _, leaf = prefix.rpartition(".")
    if num_projections == 1:
        return [prefix]
    return [f"{parent}.{projection}" if parent else projection for projection in projections[leaf]]


class CompressedTensorsW8A8(QuantizationMethod):
    """Gives every linear layer the checkpoint quantized an :class:`Int8Linear`; ignored ones stay dense.

    Runs on the CPU in any model dtype (activations are quantized from it). Other compressed-tensors
    schemes (int4 weights, static or per-tensor activations, fp8) are refused with the reason.
    """

    @classmethod
    def unsupported_reasons(cls, target: QuantizationTarget) -> list[str]:
        _, reasons = parse_w8a8_scheme(quantization_config_of(target.hf_config))
        if target.device.type != "cpu":
            reasons.append(f"it runs on the CPU, the model on {target.device.type}")
        if not torch.backends.mkldnn.is_available():
            reasons.append("torch was built without oneDNN, which runs the int8 products")
        return reasons

    def __init__(self, target: QuantizationTarget):
        super().__init__(target)
        scheme, _ = parse_w8a8_scheme(quantization_config_of(target.hf_config))
        self.scheme: W8A8Scheme = scheme
        self._projections = checkpoint_projections(target.hf_config)

    def create_weights(self, prefix: str, input_size: int, output_sizes: list[int], bias: bool) -> Int8Linear | None:
        names = checkpoint_module_names(prefix, len(output_sizes), self._projections)
        quantized = [self.scheme.quantizes(name) for name in names]
        if prefix == "lm_head" and getattr(self.target.hf_config, "tie_word_embeddings", False):
            return None  # the output layer is the (float) token embedding
        if not any(quantized):
            return None
        if not all(quantized):
            raise ModelLoadError(
                f"the checkpoint quantizes only some of {', '.join(names)}, which run as one layer; "
                "quantize all or none of them"
            )
        return Int8Linear(input_size, output_sizes, bias)

    def process_weights_after_loading(self, model: nn.Module) -> int:
        layers = [module for module in model.modules() if isinstance(module, Int8Linear)]
        for layer in layers:
            layer.pack()
        return len(layers)

"""``pagedllm quantize --method w8a8``: a float model (safetensors or GGUF) to a compressed-tensors W8A8 checkpoint.

Weights are rounded to int8 per output channel (round-to-nearest, scale = channel amax / 127, as
llm-compressor's plain ``W8A8`` preset without SmoothQuant or GPTQ); activations are left dynamic
per token, so no calibration data is needed. The output loads in pagedllm (``quantization="auto"``)
and in any runtime that reads compressed-tensors W8A8 int8 (vLLM).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend
from pagedllm_core.model import loader
from pagedllm_core.model.checkpoint import checkpoint_tensors
from pagedllm_core.model.quantization import QuantizationMethod
from pagedllm_quant_int8.kernel import quantize_per_channel
from pagedllm_quant_int8.method import checkpoint_module_names, checkpoint_projections

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"


def w8a8_quantization_config(ignore: list[str]) -> dict:
    """The ``quantization_config`` compressed-tensors gives a W8A8 int8 checkpoint (llm-compressor's ``W8A8``)."""
    return {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
                "input_activations": {
                    "num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True,
                },
                "output_activations": None,
            }
        },
        "ignore": ignore,
        "kv_cache_scheme": None,
    }


def quantize_w8a8(model: str, output: str | Path, quantize_lm_head: bool = False) -> Path:
    """Write ``model`` (a directory, .gguf file, Hub id, or ``default``) to ``output`` as W8A8 int8.

    Every linear layer but the output layer (``lm_head``, llm-compressor's default ``ignore``) is
    quantized; the other tensors are written in float32. ``quantize_lm_head`` quantizes the output
    layer too (an int8 copy of the embedding when the two are tied; the checkpoint is then untied):
    at batched sizes the float ``lm_head`` is a fifth of the default model's matmul work per token.
    """
    config = EngineConfig.build(model=None if model == DEFAULT_MODEL else model)
    source = loader.resolve_model_source(config)
    hf_config = loader.load_hf_config(source)
    ignore = [] if quantize_lm_head else ["lm_head"]
    weight_names = {f"{name}.weight" for name in linear_module_names(hf_config) if name not in ignore}

    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in _with_untied_lm_head(checkpoint_tensors(source, hf_config, torch.float32), weight_names):
        if name in weight_names:
            weight, scales = quantize_per_channel(tensor)
            tensors[name] = weight
            tensors[f"{name.removesuffix('.weight')}.weight_scale"] = scales[:, None].contiguous()
        else:
            tensors[name] = tensor.float().contiguous()
    missing = weight_names - tensors.keys()
    if missing:
        raise ValueError(f"the checkpoint has no tensor for {len(missing)} linear layers, e.g. {sorted(missing)[0]}")

    from safetensors.torch import save_file

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    save_file(tensors, output / "model.safetensors", metadata={"format": "pt"})
    if "lm_head.weight" in weight_names:
        hf_config.tie_word_embeddings = False
    hf_config.quantization_config = w8a8_quantization_config(ignore)
    hf_config.dtype = "float32"
    hf_config.save_pretrained(output)
    loader.load_tokenizer(source, config).save_pretrained(output)
    logger.info("wrote %d int8 linear layers of %s to %s", len(weight_names), source.name, output)
    return output


def _with_untied_lm_head(named_tensors, weight_names: set[str]):
    """``named_tensors``, plus ``lm_head.weight`` as a copy of the token embedding when the checkpoint
    ties the two (has no ``lm_head.weight``) and ``weight_names`` asks for it."""
    seen_lm_head, embedding = False, None
    for name, tensor in named_tensors:
        seen_lm_head |= name == "lm_head.weight"
        if name.endswith("embed_tokens.weight"):
            embedding = tensor
        yield name, tensor
    if "lm_head.weight" in weight_names and not seen_lm_head:
        if embedding is None:
            raise ValueError("cannot quantize lm_head: the checkpoint has neither lm_head.weight nor an embed_tokens.weight")
        yield "lm_head.weight", embedding


def quantize_from_args(model: str, out: str, args) -> Path:
    """``pagedllm quantize --method w8a8 [--quantize-lm-head]``'s entry point."""
    return quantize_w8a8(model, out, quantize_lm_head=args.quantize_lm_head)


def linear_module_names(hf_config) -> list[str]:
    """The checkpoint's module names of every linear layer our model of ``hf_config`` has."""
    recorder = _LinearRecorder()
    shape = loader.attention_shape(hf_config)
    spec = AttentionSpec(
        shape.num_heads, shape.num_kv_heads, shape.head_size, shape.scale, 16, torch.float32, torch.device("meta")
    )
    loader.build_model(hf_config, TorchAttentionBackend(spec), torch.float32, "meta", recorder)
    projections = checkpoint_projections(hf_config)
    return [name for prefix, count in recorder.layers for name in checkpoint_module_names(prefix, count, projections)]


class _LinearRecorder(QuantizationMethod):
    """Notes the linear layers offered while a model is built and leaves them all dense."""

    def __init__(self):
        self.layers: list[tuple[str, int]] = []

    def create_weights(self, prefix: str, input_size: int, output_sizes: list[int], bias: bool):
        self.layers.append((prefix, len(output_sizes)))
        return None

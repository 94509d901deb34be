"""``pagedllm quantize --method awq MODEL OUT``: an AWQ checkpoint from a float Llama/Mistral/Qwen2 model.

The model is read with transformers (a Hugging Face directory, a Hub id or a GGUF file, dequantized to float32),
calibrated on the text this package ships (``data/calibration.txt``), searched layer by layer
(:mod:`pagedllm_quant_awq.scale_search`), and written in AutoAWQ's GEMM layout (:mod:`pagedllm_quant_awq.export`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from pagedllm_quant_awq.export import write_awq_checkpoint
from pagedllm_quant_awq.scale_search import (
    QuantizedWeight,
    ScaleGroup,
    apply_scales,
    quantize_weight,
    search_clip,
    search_scales,
)

logger = logging.getLogger(__name__)

GROUP_SIZES = (128, 64, 32)  # tried in order when no group size is given
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


@dataclass(frozen=True)
class AWQSettings:
    """What ``pagedllm quantize --method awq`` takes besides the model and the output directory."""

    group_size: int | None = None  # None: the largest of GROUP_SIZES dividing every layer's input size
    clip: bool = True
    quantize_lm_head: bool = False  # also the output layer (a tied one becomes a 4-bit copy of the embedding)
    sequence_length: int = 256
    max_sequences: int = 16


def calibration_text() -> str:
    """The English calibration text shipped with the plugin (prose, dialogue, code, numbers; written for it)."""
    return resources.files("pagedllm_quant_awq").joinpath("data/calibration.txt").read_text(encoding="utf-8")


def calibration_batch(tokenizer, settings: AWQSettings) -> torch.Tensor:
    """The calibration text as token ids ``[sequences, sequence_length]`` (consecutive slices of it)."""
    token_ids = tokenizer(calibration_text(), add_special_tokens=False)["input_ids"]
    num_sequences = min(settings.max_sequences, len(token_ids) // settings.sequence_length)
    if num_sequences == 0:
        raise ValueError(f"sequence_length {settings.sequence_length} exceeds the calibration text ({len(token_ids)} tokens)")
    used = token_ids[: num_sequences * settings.sequence_length]
    return torch.tensor(used).reshape(num_sequences, settings.sequence_length)


def choose_group_size(model: nn.Module, requested: int | None) -> int:
    in_sizes = {module.in_features for module in quantized_linears(model).values()}
    candidates = (requested,) if requested else GROUP_SIZES
    for group_size in candidates:
        if all(size % group_size == 0 for size in in_sizes):
            return group_size
    raise ValueError(f"group_size {requested or GROUP_SIZES} must divide every layer's input size {sorted(in_sizes)}")


def quantized_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The decoder layers' linear layers by name (``lm_head`` stays in float16, as AutoAWQ leaves it)."""
    return {name: module for name, module in model.model.layers.named_modules(prefix="model.layers")
            if isinstance(module, nn.Linear)}


def load_float_model(model: str):
    """A transformers model in float32 and its tokenizer, from a directory, Hub id or GGUF (``default``: ours)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pagedllm_core.config import EngineConfig
    from pagedllm_core.model.source import resolve_model_source

    source = resolve_model_source(EngineConfig(model=None if model == "default" else model))
    tokenizer = AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(source.directory, gguf_file=source.gguf_file, dtype=torch.float32)
    architecture = (loaded.config.architectures or [type(loaded).__name__])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"AWQ quantization supports {', '.join(SUPPORTED_ARCHITECTURES)}, not {architecture}")
    if getattr(loaded.config, "quantization_config", None) is not None:
        # A GGUF file is read dequantized; what is left of its quantization is only the config entry.
        del loaded.config.quantization_config
    return loaded.eval(), tokenizer


class _StopForward(Exception):
    pass


@torch.no_grad()
def first_layer_inputs(model: nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The hidden states and keyword arguments (rotary embeddings, mask) the first decoder layer is called with."""
    captured = {}

    def capture(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        captured["kwargs"] = {key: value for key, value in kwargs.items() if key != "hidden_states"}
        raise _StopForward

    handle = model.model.layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        model(input_ids, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["hidden"], captured["kwargs"]


@torch.no_grad()
def linear_inputs(layer: nn.Module, hidden: torch.Tensor, kwargs: dict, names: list[str]) -> dict[str, torch.Tensor]:
    """What each named linear layer of ``layer`` reads when the layer runs on ``hidden``."""
    inputs, handles = {}, []
    for name in names:
        def capture(module, args, output, name=name):
            inputs[name] = args[0]

        handles.append(layer.get_submodule(name).register_forward_hook(capture))
    try:
        layer(hidden, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return inputs


def scale_groups(layer: nn.Module, inputs: dict[str, torch.Tensor], kwargs: dict) -> list[ScaleGroup]:
    attention, mlp = layer.self_attn, layer.mlp
    groups = [
        ScaleGroup(layer.input_layernorm, [attention.q_proj, attention.k_proj, attention.v_proj],
                   inputs["self_attn.q_proj"], attention, kwargs),
    ]
    # v's output rows can absorb o's scales only when they are o's input channels (no grouped-query sharing).
    if attention.v_proj.weight.shape == attention.o_proj.weight.shape:
        groups.append(ScaleGroup(attention.v_proj, [attention.o_proj], inputs["self_attn.o_proj"], attention.o_proj, {}))
    groups += [
        ScaleGroup(layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], inputs["mlp.gate_proj"], mlp, {}),
        ScaleGroup(mlp.up_proj, [mlp.down_proj], inputs["mlp.down_proj"], mlp.down_proj, {}),
    ]
    return groups


@torch.no_grad()
def quantize_awq(model: str, out: str | Path, settings: AWQSettings = AWQSettings()) -> Path:
    """Write an AWQ checkpoint of ``model`` to ``out``; returns ``out``."""
    started = time.perf_counter()
    float_model, tokenizer = load_float_model(model)
    group_size = choose_group_size(float_model, settings.group_size)
    batch = calibration_batch(tokenizer, settings)
    logger.info("AWQ: %d calibration sequences of %d tokens, group_size %d", *batch.shape, group_size)
    hidden, kwargs = first_layer_inputs(float_model, batch)
    names = ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"]
    for index, layer in enumerate(float_model.model.layers):
        groups = scale_groups(layer, linear_inputs(layer, hidden, kwargs, names), kwargs)
        for group in groups:
            apply_scales(group, search_scales(group, group_size))
        if settings.clip:
            for group in groups:
                for linear in group.linears:
                    # q and k meet in a softmax through their product; AWQ leaves their range alone.
                    if linear not in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                        limit = search_clip(linear, group.inputs, group_size).repeat_interleave(group_size, dim=1)
                        linear.weight.data = linear.weight.data.clamp(-limit, limit)
        output = layer(hidden, **kwargs)
        hidden = output[0] if isinstance(output, tuple) else output
        logger.info("AWQ: layer %d/%d searched (%.0f s)", index + 1, len(float_model.model.layers),
                    time.perf_counter() - started)
    quantized = {name: quantize_weight(linear.weight.data, group_size)
                 for name, linear in quantized_linears(float_model).items()}
    if settings.quantize_lm_head:
        quantized["lm_head"] = quantize_output_layer(float_model, hidden, group_size, settings.clip)
    write_awq_checkpoint(float_model, tokenizer, quantized, group_size, Path(out))
    logger.info("AWQ: wrote %s in %.0f s", out, time.perf_counter() - started)
    return Path(out)


@torch.no_grad()
def quantize_output_layer(model: nn.Module, hidden: torch.Tensor, group_size: int, clip: bool) -> QuantizedWeight:
    """The output layer's weight (the token embedding's, when they are tied) rounded to 4 bits per group.

    No scales are searched: the final norm could absorb them, but a tied embedding could not, and the
    weight is already what the model's other quantized layers read as one row per token. With ``clip``, each
    group's range is searched on what the layer reads: the final norm of the last layer's calibration output.
    """
    lm_head = model.get_output_embeddings()
    limit = search_clip(lm_head, model.model.norm(hidden), group_size) if clip else None
    return quantize_weight(lm_head.weight.data, group_size, limit)


def quantize_from_args(model: str, out: str, args) -> Path:
    """``pagedllm quantize --method awq``'s entry point (``--group-size``, ``--no-clip``, ``--quantize-lm-head``)."""
    settings = AWQSettings(group_size=args.group_size, clip=args.clip, quantize_lm_head=args.quantize_lm_head)
    return quantize_awq(model, out, settings)

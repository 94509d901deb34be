"""Decode steps in one C++ call: the decoder layers run back to back with no Python between them.

Layer by layer, a decode step of one sequence of the default model spends about 1.7 of its 6.9 ms in
the model's Python around the kernels: module calls, attribute lookups, views, argument checks
(docs/benchmarks.md, "Python's share of a decode step"). A decoder program
(``LlamaDecoderProgram`` in ``layers/csrc/decoder_program.cpp``) holds every layer's weights and
calls the same kernels, in the same order, from C++, so its outputs are those of the layers' Python
bit for bit.

The program reaches the projections and the attention through torch's dispatcher: each layer is a
:class:`NativeOp`, a registered torch operator with the arguments the layer always passes it. Dense
layers are ``aten::linear`` or oneDNN's prepacked ``mkldnn::_linear_pointwise``; a quantized layer
takes part by returning its plugin's operator (``TORCH_LIBRARY``) from ``native_op()``, and an
attention backend by naming its decode operator (:meth:`AttentionBackend.native_decode_op
<pagedllm_core.attention.backend.AttentionBackend.native_decode_op>`). A model runs its decode steps
this way on the CPU unless ``enforce_eager`` is set, when every part has such an operator, its dtype
is float32, bfloat16 or float16, and neither LoRA adapters nor tensor parallelism are on; otherwise (and for
the steps the backend declines, such as the ``cpu`` backend's steps with a long prompt chunk) its layers run
in Python as before, and start-up logs why.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.model.layers import cpu_kernels
from pagedllm_core.model.layers.activation import SiluAndMul
from pagedllm_core.model.layers.linear import MergedLinear
from pagedllm_core.model.native_op import NativeOp

if TYPE_CHECKING:
    from pagedllm_core.model.layers.rotary import RotaryEmbedding
    from pagedllm_core.model.models.llama import LlamaModel

logger = logging.getLogger(__name__)


class NativeDecodeUnavailable(Exception):
    """Why a model's decode steps run layer by layer in Python."""


def native_linear_op(layer: nn.Module) -> NativeOp:
    """The operator computing a projection: ``aten::linear`` for a dense layer, else the layer's ``native_op()``."""
    if type(layer) in (nn.Linear, MergedLinear):
        return NativeOp("aten::linear", (layer.weight, layer.bias))
    native_op = getattr(layer, "native_op", None)
    op = native_op() if native_op is not None else None
    if op is None:
        raise NativeDecodeUnavailable(f"{type(layer).__name__} layers have no native operator")
    return op


class NativeDecoder:
    """A model's decode steps through its decoder program; built by :func:`build_native_decoder`."""

    def __init__(self, embedding: nn.Module, rotary: RotaryEmbedding, program, attention: AttentionBackend):
        self.embedding = embedding
        self.rotary = rotary
        self.program = program
        self.attention = attention

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor], metadata: AttentionMetadata
    ) -> torch.Tensor | None:
        """The final hidden states of a step the backend has prepared, as the model's forward computes them;
        None when the backend declines the step (the ``cpu`` backend declines steps with a long prompt chunk)."""
        step_arguments = self.attention.native_step_arguments(metadata)
        if step_arguments is None:
            return None
        hidden_states = self.embedding(input_ids)
        cos, sin = self.rotary.embed(positions, hidden_states.dtype)
        return self.program.run(hidden_states, cos, sin, kv_caches, step_arguments)


def forward_prepared_step(
    model: nn.Module,
    native_decoder: NativeDecoder | None,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    kv_caches: list[torch.Tensor],
    metadata: AttentionMetadata,
) -> torch.Tensor:
    """The model's hidden states for a step its backend has prepared: through the decoder program when there is
    one and the backend gives it the step, else through the model's forward."""
    if native_decoder is not None:
        hidden_states = native_decoder.forward(input_ids, positions, kv_caches, metadata)
        if hidden_states is not None:
            return hidden_states
    return model(input_ids, positions, kv_caches, metadata)


def llama_decoder_program(model: LlamaModel, attention: AttentionBackend):
    """The ``LlamaDecoderProgram`` of a Llama, Mistral or Qwen2 model's layers and final norm; raises
    :class:`NativeDecodeUnavailable` naming the first part that cannot run in it."""
    weight = model.norm.weight
    if weight.dtype not in cpu_kernels.KERNEL_DTYPES or weight.device.type != "cpu":
        raise NativeDecodeUnavailable(
            "the program's kernels take float32, bfloat16 or float16 CPU weights, "
            f"not {weight.dtype} on {weight.device}"
        )
    kernels = cpu_kernels.load_kernels()
    if kernels is None:
        raise NativeDecodeUnavailable("the decoder layers' C++ kernels could not be built")
    decode_op = attention.native_decode_op()
    if decode_op is None:
        raise NativeDecodeUnavailable(f"{type(attention).__name__} has no native decode operator")
    if attention.spec.calculate_kv_scales:
        raise NativeDecodeUnavailable("calculate_kv_scales computes the fp8 scales in the layers' Python")
    first = model.layers[0]
    heads = first.self_attn.attn
    program = kernels.LlamaDecoderProgram(
        heads.num_heads, heads.num_kv_heads, heads.head_size, first.input_layernorm.eps,
        cpu_kernels.silu_vector_block(weight.dtype), weight,
    )
    for layer in model.layers:
        if not isinstance(layer.mlp.act_fn, SiluAndMul):
            raise NativeDecodeUnavailable(f"the program's MLP is silu-gated, not {type(layer.mlp.act_fn).__name__}")
        self_attn = layer.self_attn
        program.add_layer(
            layer.input_layernorm.weight,
            layer.post_attention_layernorm.weight,
            native_linear_op(self_attn.qkv_proj),
            native_linear_op(self_attn.o_proj),
            native_linear_op(layer.mlp.gate_up_proj),
            native_linear_op(layer.mlp.down_proj),
            NativeOp(decode_op, (self_attn.attn.k_scale, self_attn.attn.v_scale)),
        )
    return program


def build_native_decoder(
    model: nn.Module, attention: AttentionBackend, device: torch.device, enforce_eager: bool, lora_enabled: bool
) -> NativeDecoder | None:
    """The model's :class:`NativeDecoder` on a CPU, or None (with the reason logged there) when its decode steps run
    layer by layer."""
    if device.type != "cpu":
        return None
    try:
        if enforce_eager:
            raise NativeDecodeUnavailable("enforce_eager is set")
        if lora_enabled:
            raise NativeDecodeUnavailable("LoRA adapters are enabled")
        native_decoder = getattr(model, "native_decoder", None)
        if native_decoder is None:
            raise NativeDecodeUnavailable(f"{type(model).__name__} has no decoder program")
        decoder = native_decoder(attention)
    except NativeDecodeUnavailable as reason:
        logger.info("decode steps run layer by layer in Python: %s", reason)
        return None
    logger.info("decode steps run the decoder layers in one C++ call (%d layers)", decoder.program.num_layers)
    return decoder

"""The ``gguf`` quantization method: which layers run from their blocks, and where the blocks come from."""

from __future__ import annotations

import logging

import torch

from pagedllm_core.model.attention_shape import attention_shape
from pagedllm_core.model.gguf_parse_cache import reuse_gguf_parses
from pagedllm_core.model.models import resolve_model_class
from pagedllm_core.model.quantization import QuantizationMethod, QuantizationTarget
from pagedllm_quant_gguf.blocks import SUPPORTED_QUANT_TYPES
from pagedllm_quant_gguf.layer import GGUFLinear
from pagedllm_quant_gguf.options import GGUFOptions

logger = logging.getLogger(__name__)

# The GGUF name of the token embedding, which a model with tied embeddings also uses as its output layer.
TOKEN_EMBEDDING = "token_embd.weight"


class GGUFQuantization(QuantizationMethod):
    """Gives every linear layer whose GGUF tensors are blocks of one supported type a
    :class:`GGUFLinear` holding those blocks; layers stored in other formats (or as floats) stay dense.

    The blocks are read from the file while the model is built, so no dense copy of a quantized
    weight ever exists in the model. llama.cpp stores the q and k rows of llama-architecture
    models permuted (for its rotary layout); the method puts them back in the checkpoint's order.
    """

    @classmethod
    def unsupported_reasons(cls, target: QuantizationTarget) -> list[str]:
        reasons = []
        if not target.source.is_gguf:
            reasons.append("the checkpoint is not a GGUF file")
        if target.device.type != "cpu":
            reasons.append(f"its kernel runs on the CPU, the model on {target.device.type}")
        if target.dtype != torch.float32:
            reasons.append(f"its kernel computes in float32, the model runs in {target.dtype}")
        return reasons

    options_class = GGUFOptions

    def __init__(self, target: QuantizationTarget, options: GGUFOptions = GGUFOptions()):
        import gguf

        from pagedllm_quant_gguf.kernels import load_kernels

        super().__init__(target)
        self.options = options
        self._kernels = load_kernels()
        source = target.source
        with reuse_gguf_parses(source.gguf_parses):
            reader = gguf.GGUFReader(source.directory / source.gguf_file)
        self._tensors = {tensor.name: tensor for tensor in reader.tensors}
        self._architecture = _architecture_name(reader)
        architecture = {value: key for key, value in gguf.MODEL_ARCH_NAMES.items()}[self._architecture]
        self._name_map = gguf.get_tensor_name_map(architecture, target.hf_config.num_hidden_layers)
        merged = resolve_model_class(target.hf_config).merged_projections
        # merged module name -> its checkpoint projections in order, e.g. qkv_proj -> [q_proj, k_proj, v_proj]
        self._projections: dict[str, list[str]] = {}
        for projection, (merged_name, index) in sorted(merged.items(), key=lambda item: item[1][1]):
            self._projections.setdefault(merged_name, []).insert(index, projection)

    def create_weights(self, prefix: str, input_size: int, output_sizes: list[int], bias: bool) -> GGUFLinear | None:
        tensors = [self._gguf_tensor(name) for name in self._checkpoint_names(prefix, len(output_sizes))]
        if any(tensor is None for tensor in tensors):
            logger.debug("gguf: %s has no GGUF tensor; it stays dense", prefix)
            return None
        quant_types = {int(tensor.tensor_type) for tensor in tensors}
        if len(quant_types) != 1 or not quant_types <= set(SUPPORTED_QUANT_TYPES):
            logger.debug("gguf: %s is stored as type %s; it stays dense", prefix, sorted(quant_types))
            return None
        blocks = [self._rows_in_checkpoint_order(tensor) for tensor in tensors]
        if [rows.shape[0] for rows in blocks] != output_sizes:
            return None
        return GGUFLinear(input_size, output_sizes, torch.cat(blocks), quant_types.pop(), bias, self._kernels, self.options)

    def _checkpoint_names(self, prefix: str, num_projections: int) -> list[str]:
        """The Hugging Face weight names of the layer's projections (one, or each of a merged layer's)."""
        if prefix == "lm_head":
            return ["lm_head.weight"]
        parent, _, leaf = prefix.rpartition(".")
        projections = self._projections.get(leaf, [leaf]) if num_projections > 1 else [leaf]
        return [f"{parent}.{projection}.weight" for projection in projections]

    def _gguf_tensor(self, hf_name: str):
        gguf_name = self._name_map.get_name(hf_name, try_suffixes=(".weight",))
        if gguf_name not in self._tensors and hf_name == "lm_head.weight" and self.target.hf_config.tie_word_embeddings:
            gguf_name = TOKEN_EMBEDDING
        return self._tensors.get(gguf_name)

    def _rows_in_checkpoint_order(self, tensor) -> torch.Tensor:
        """The tensor's blocks as uint8 ``[rows, bytes per row]``, llama.cpp's q/k permutation undone."""
        blocks = torch.tensor(tensor.data.reshape(tensor.data.shape[0], -1))
        if self._architecture != "llama":
            return blocks
        shape = attention_shape(self.target.hf_config)
        if tensor.name.endswith("attn_q.weight"):
            return blocks[_unpermuted_rows(blocks.shape[0], shape.num_heads)]
        if tensor.name.endswith("attn_k.weight"):
            return blocks[_unpermuted_rows(blocks.shape[0], shape.num_kv_heads)]
        return blocks


def _unpermuted_rows(num_rows: int, num_heads: int) -> torch.Tensor:
    """Row indices that undo llama.cpp's rotary permutation of a q or k projection with ``num_heads`` heads.

    llama.cpp stores each head's rows as (half, pair) where the checkpoint has (pair, half)."""
    half = num_rows // num_heads // 2
    return torch.arange(num_rows).reshape(num_heads, half, 2).transpose(1, 2).reshape(-1)


def _architecture_name(reader) -> str:
    field = reader.fields["general.architecture"]
    return bytes(field.parts[field.data[0]]).decode()

"""A linear layer that runs from its checkpoint's GGUF blocks, with no dense copy of its weight."""

from __future__ import annotations

from types import ModuleType

import torch
from torch import nn

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.native_op import NativeOp
from pagedllm_core.model.quantization import QuantizedLinear
from pagedllm_quant_gguf.options import GGUFOptions, default_max_block_rows


class GGUFLinear(QuantizedLinear):
    """``x @ W.T + b`` with ``W`` held only as GGUF blocks, one weight row per row of ``blocks``.

    A decode step of up to a dozen or so sequences is bound by reading weights from memory: the blocks
    hold 4.5-8.5 bits per weight against float32's 32, and the kernel reads them in place. Larger steps
    are compute-bound; a step of more than ``max_block_rows`` rows (None: no limit) dequantizes the weight
    into a temporary float32 matrix first and multiplies it densely.
    """

    def __init__(
        self,
        input_size: int,
        output_sizes: list[int],
        blocks: torch.Tensor,
        quant_type: int,
        bias: bool,
        kernels: ModuleType,
        options: GGUFOptions,
    ):
        super().__init__(input_size, output_sizes)
        self.max_block_rows = (
            options.max_block_rows if options.max_block_rows is not None else default_max_block_rows(kernels)
        )
        self.int8_activations = options.int8_activations
        self.register_buffer("blocks", blocks)
        self.quant_type = quant_type
        self.bias = nn.Parameter(torch.empty(self.out_features), requires_grad=False) if bias else None
        self._kernels = kernels

    def checkpoint_pieces(self) -> set[tuple[str, int | None]]:
        if self.bias is None:
            return set()
        return {("bias", shard) for shard in self._shards()}

    def load_checkpoint_tensor(self, parameter_name: str, shard_index: int | None, tensor: torch.Tensor) -> None:
        start = sum(self.output_sizes[:shard_index]) if shard_index is not None else 0
        size = self.output_sizes[shard_index] if shard_index is not None else self.out_features
        # The weight is in the blocks already; the checkpoint's dense rendering of it is only checked.
        expected = (size, self.in_features) if parameter_name == "weight" else (size,)
        if tuple(tensor.shape) != expected or (parameter_name == "bias" and self.bias is None):
            raise ModelLoadError(
                f"GGUF layer got a {parameter_name} of shape {tuple(tensor.shape)}, expected {expected}"
            )
        if parameter_name == "bias":
            self.bias.data.narrow(0, start, size).copy_(tensor)

    def _shards(self) -> list[int | None]:
        return list(range(len(self.output_sizes))) if len(self.output_sizes) > 1 else [None]

    def dequantized_weight(self) -> torch.Tensor:
        """``W`` as float32 ``[out_features, in_features]``, computed from the blocks."""
        return self._kernels.gguf_dequantize(self.blocks, self.quant_type, self.in_features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [..., in_features] -> [..., out_features]; the kernel picks the blocks or the dense matmul.
        return self._kernels.linear(
            hidden_states, self.blocks, self.quant_type, self.bias, self.int8_activations, self.max_block_rows
        )

    def native_op(self) -> NativeOp:
        """:meth:`forward` as the extension's registered operator, for the decoder program."""
        return NativeOp(
            f"{self._kernels.__name__}::linear",
            (self.blocks, self.quant_type, self.bias, self.int8_activations, self.max_block_rows),
        )

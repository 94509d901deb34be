"""A linear layer held as int8 weights with one scale per output channel."""

from __future__ import annotations

import torch
from torch import nn

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.native_op import NativeOp
from pagedllm_core.model.quantization import QuantizedLinear
from pagedllm_quant_int8.kernel import load_kernels, pack_weight, weight_zero_points


class Int8Linear(QuantizedLinear):
    """``x @ (W * s).T + b`` with ``W`` int8 ``[out_features, in_features]`` and ``s`` float32 per output
    channel, ``x`` quantized to int8 per token at each call (W8A8). After loading, :meth:`pack`
    moves ``W`` into oneDNN's layout (the plain copy is dropped).

    Takes compressed-tensors' tensors: ``weight`` (int8), ``weight_scale`` (``[rows, 1]`` per channel or
    ``[1]`` per tensor), an all-zero ``weight_zero_point`` when present, and ``bias``.
    """

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool):
        super().__init__(input_size, output_sizes)
        self.register_buffer("weight", torch.zeros(self.out_features, input_size, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.zeros(self.out_features, dtype=torch.float32))
        self.bias = nn.Parameter(torch.empty(self.out_features), requires_grad=False) if bias else None
        self.packed_weight: torch.Tensor | None = None
        self.weight_zero_points: torch.Tensor | None = None

    def checkpoint_pieces(self) -> set[tuple[str, int | None]]:
        names = ["weight", "weight_scale"] + (["bias"] if self.bias is not None else [])
        return {(name, shard) for name in names for shard in self._shards()}

    def load_checkpoint_tensor(self, parameter_name: str, shard_index: int | None, tensor: torch.Tensor) -> None:
        start = sum(self.output_sizes[:shard_index]) if shard_index is not None else 0
        size = self.output_sizes[shard_index] if shard_index is not None else self.out_features
        if parameter_name == "weight":
            if tensor.dtype != torch.int8 or tuple(tensor.shape) != (size, self.in_features):
                raise ModelLoadError(
                    f"W8A8 layer got a {tensor.dtype} weight of shape {tuple(tensor.shape)}, "
                    f"expected int8 {(size, self.in_features)}"
                )
            self.weight.narrow(0, start, size).copy_(tensor)
        elif parameter_name == "weight_scale":
            if tensor.numel() not in (1, size):
                raise ModelLoadError(f"W8A8 layer got a weight_scale of shape {tuple(tensor.shape)} for {size} rows")
            self.weight_scale.narrow(0, start, size).copy_(tensor.float().reshape(-1).expand(size))
        elif parameter_name == "weight_zero_point":
            if bool(tensor.any()):
                raise ModelLoadError("W8A8 layer got a non-zero weight_zero_point; only symmetric int8 is supported")
        elif parameter_name == "bias" and self.bias is not None:
            self.bias.data.narrow(0, start, size).copy_(tensor)
        else:
            super().load_checkpoint_tensor(parameter_name, shard_index, tensor)

    def _shards(self) -> list[int | None]:
        return list(range(len(self.output_sizes))) if len(self.output_sizes) > 1 else [None]

    def dequantized_weight(self) -> torch.Tensor:
        """``W * s`` as float32 ``[out_features, in_features]`` (before :meth:`pack`): the float model
        these weights stand for."""
        return self.weight.float() * self.weight_scale[:, None]

    def pack(self) -> None:
        self.packed_weight = pack_weight(self.weight)
        self.weight_zero_points = weight_zero_points(self.weight_scale)
        del self.weight

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [..., in_features] -> [..., out_features]
        if self.packed_weight is None:
            raise RuntimeError("Int8Linear.pack() must run after the weights are loaded")
        rows = hidden_states.reshape(-1, self.in_features)
        output = load_kernels().int8_linear(
            rows, self.packed_weight, self.weight_scale, self.weight_zero_points, self.bias
        )
        return output.view(*hidden_states.shape[:-1], self.out_features)

    def native_op(self) -> NativeOp:
        """:meth:`forward` on rows as the extension's registered operator, for the decoder program."""
        return NativeOp(
            f"{load_kernels().__name__}::linear",
            (self.packed_weight, self.weight_scale, self.weight_zero_points, self.bias),
        )

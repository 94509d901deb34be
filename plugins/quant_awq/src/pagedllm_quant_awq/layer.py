"""A linear layer that runs from an AWQ checkpoint's packed 4-bit weights, with no dense copy of its weight."""

from __future__ import annotations

from types import ModuleType

import torch
from torch import nn

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.native_op import NativeOp
from pagedllm_core.model.quantization import QuantizedLinear
from pagedllm_quant_awq.packing import PACK_FACTOR

CHECKPOINT_TENSORS = ("qweight", "qzeros", "scales")


class AWQLinear(QuantizedLinear):
    """``x @ W + b`` with ``W`` held as AWQ's packed 4-bit ``qweight``, ``qzeros`` and float16 ``scales``.

    The tensors are created in their packed shapes before loading, one projection's columns after the
    other for a merged layer (q/k/v, gate/up), and the checkpoint's tensors are copied into their columns.
    :meth:`prepare` then rearranges them once for the device's kernel: the C++ kernel's layout on a CPU
    (still 4 bits per weight), AWQ's own layout for the Triton kernel on a GPU.
    """

    def __init__(self, input_size: int, output_sizes: list[int], group_size: int, bias: bool):
        super().__init__(input_size, output_sizes)
        if input_size % group_size:
            raise ModelLoadError(f"AWQ layer: in_features {input_size} is not a multiple of group_size {group_size}")
        if any(size % PACK_FACTOR for size in output_sizes):
            raise ModelLoadError(f"AWQ layer: output sizes {output_sizes} must be multiples of {PACK_FACTOR}")
        self.group_size = group_size
        num_groups, words = input_size // group_size, self.out_features // PACK_FACTOR
        self.register_buffer("qweight", torch.empty(input_size, words, dtype=torch.int32))
        self.register_buffer("qzeros", torch.empty(num_groups, words, dtype=torch.int32))
        self.register_buffer("scales", torch.empty(num_groups, self.out_features, dtype=torch.float16))
        self.bias = nn.Parameter(torch.empty(self.out_features), requires_grad=False) if bias else None
        self._cpu_kernels: ModuleType | None = None

    def checkpoint_pieces(self) -> set[tuple[str, int | None]]:
        names = CHECKPOINT_TENSORS + (("bias",) if self.bias is not None else ())
        return {(name, shard) for name in names for shard in self._shards()}

    def load_checkpoint_tensor(self, parameter_name: str, shard_index: int | None, tensor: torch.Tensor) -> None:
        start = sum(self.output_sizes[:shard_index]) if shard_index is not None else 0
        size = self.output_sizes[shard_index] if shard_index is not None else self.out_features
        if parameter_name == "bias" and self.bias is not None:
            target, start_column, columns = self.bias.data, start, size
        elif parameter_name in CHECKPOINT_TENSORS:
            target = getattr(self, parameter_name)
            packed = parameter_name != "scales"
            start_column, columns = (start // PACK_FACTOR, size // PACK_FACTOR) if packed else (start, size)
        else:
            raise ModelLoadError(f"AWQ layer takes qweight, qzeros, scales and bias, not {parameter_name!r}")
        expected = (*target.shape[:-1], columns)
        if tuple(tensor.shape) != expected:
            raise ModelLoadError(
                f"AWQ layer got a {parameter_name} of shape {tuple(tensor.shape)}, expected {expected} "
                f"(in_features {self.in_features}, group_size {self.group_size})"
            )
        target.narrow(-1, start_column, columns).copy_(tensor)

    def _shards(self) -> list[int | None]:
        return list(range(len(self.output_sizes))) if len(self.output_sizes) > 1 else [None]

    def prepare(self, cpu_kernels: ModuleType | None) -> None:
        """Rearrange the loaded tensors for the CPU kernel (``cpu_kernels``), or keep them for Triton (None)."""
        if cpu_kernels is None:
            return
        from pagedllm_quant_awq.kernels import to_kernel_layout

        self.qweight, self.qzeros, self.scales = to_kernel_layout(cpu_kernels, self.qweight, self.qzeros, self.scales)
        if self.bias is not None:
            self.bias.data = self.bias.data.float()
        self._cpu_kernels = cpu_kernels

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [..., in_features] -> [..., out_features]. A decode step calls this for every projection
        # of every layer, so a float32 model's CPU path is the kernel call alone.
        if self._cpu_kernels is not None:
            # The kernel computes in float32; activations are small, so other model dtypes convert at the edges.
            output = self._cpu_kernels.awq_linear(
                hidden_states.float(), self.qweight, self.qzeros, self.scales, self.group_size, self.out_features,
                self.bias,
            )
            return output if hidden_states.dtype == torch.float32 else output.to(hidden_states.dtype)
        from pagedllm_quant_awq.triton_gemm import awq_gemm

        rows = hidden_states.reshape(-1, self.in_features)
        output = awq_gemm(rows, self.qweight, self.qzeros, self.scales, self.group_size, self.bias)
        return output.view(*hidden_states.shape[:-1], self.out_features)

    def native_op(self) -> NativeOp | None:
        """The CPU kernel as the extension's registered operator, for the decoder program (None on a GPU)."""
        if self._cpu_kernels is None:
            return None
        return NativeOp(
            f"{self._cpu_kernels.__name__}::linear",
            (self.qweight, self.qzeros, self.scales, self.group_size, self.out_features, self.bias),
        )

"""The contract every paged attention backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from pagedllm_core.attention.metadata import AttentionMetadata


@dataclass(frozen=True)
class AttentionSpec:
    """The shape of the attention a model needs, fixed for the engine's lifetime."""

    num_heads: int
    num_kv_heads: int
    head_size: int
    scale: float
    block_size: int
    kv_cache_dtype: torch.dtype
    device: torch.device
    # The model's activation dtype; None means the same as ``kv_cache_dtype``.
    dtype: torch.dtype | None = None
    # With an fp8 cache: compute each layer's K/V scales from the first step's keys and values.
    calculate_kv_scales: bool = False

    @property
    def model_dtype(self) -> torch.dtype:
        return self.kv_cache_dtype if self.dtype is None else self.dtype


class AttentionBackend(ABC):
    """Paged attention over a KV cache of fixed-size blocks.

    The KV cache of one layer is a tensor ``[2, num_blocks, block_size, num_kv_heads, head_size]``
    (keys at index 0, values at 1); a token in slot ``s`` lives at block ``s // block_size``,
    offset ``s % block_size``. A backend instance serves every layer of one model.
    """

    # Whether decode steps may replay CUDA graphs (pagedllm_core/worker/cuda_graphs.py). Such a
    # backend skips slot -1 in its cache write, and its prepare/forward never wait on the device
    # and depend on the step only through tensors and max_seq_len (captured at max_model_len).
    supports_cuda_graphs: bool = False

    @classmethod
    def unsupported_reasons(cls, spec: AttentionSpec) -> list[str]:
        """Why this backend cannot run ``spec`` (head size, dtype, device); empty when it can."""
        return []

    @classmethod
    def supported_kv_cache_dtypes(cls, model_dtype: torch.dtype) -> tuple[torch.dtype, ...]:
        """The dtypes this backend can keep keys and values in for a model running in ``model_dtype``
        (the engine refuses ``kv_cache_dtype`` values outside them, and ``auto`` skips the backend).
        The default: the model's own dtype only."""
        return (model_dtype,)

    @classmethod
    def kv_cache_shape(cls, num_blocks: int, block_size: int, num_kv_heads: int, head_size: int) -> tuple[int, ...]:
        """The shape of one layer's cache in this backend's layout; the default is described above."""
        return (2, num_blocks, block_size, num_kv_heads, head_size)

    @classmethod
    def copy_blocks(cls, kv_cache: torch.Tensor, block_copies: list[tuple[int, int]]) -> None:
        """Copy whole blocks (copy-on-write) in every layer of ``kv_cache``, ``[num_layers, *kv_cache_shape]``."""
        for source, destination in block_copies:
            kv_cache[:, :, destination] = kv_cache[:, :, source]

    def __init__(self, spec: AttentionSpec):
        self.spec = spec

    def prepare(self, metadata: AttentionMetadata) -> None:
        """Called once per step before the first layer; may store derived tensors in ``metadata.backend_data``."""

    @abstractmethod
    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        """Write this step's keys/values into ``kv_cache`` at ``metadata.slot_mapping``, then attend.

        A backend whose :meth:`supported_kv_cache_dtypes` include fp8 ones also takes the keyword
        ``kv_scales``: the layer's ``(k_scale, v_scale)`` float32 scalars, passed whenever the cache
        is fp8 (keys are stored as ``key / k_scale``, see :mod:`pagedllm_core.attention.kv_quant`).

        :param query: ``[num_tokens, num_heads, head_size]``
        :param key: ``[num_tokens, num_kv_heads, head_size]``
        :param value: ``[num_tokens, num_kv_heads, head_size]``
        :param kv_cache: this layer's cache, ``[2, num_blocks, block_size, num_kv_heads, head_size]``
        :returns: ``[num_tokens, num_heads, head_size]`` in the query's dtype.
        """

    def native_decode_op(self) -> str | None:
        """The registered torch operator (``"namespace::name"``) that does what :meth:`forward` does for one
        layer of a step :meth:`native_step_arguments` accepts (decode steps at least), for the decoder program
        (:mod:`pagedllm_core.model.native_decode`), which calls it from C++ as
        ``op(query, key, value, kv_cache, k_scale, v_scale, *native_step_arguments(metadata))`` with
        :meth:`forward`'s shapes and the layer's fp8 scales (0-d float32, 1.0 for other caches); None (the
        default): every layer calls :meth:`forward`."""
        return None

    def native_step_arguments(self, metadata: AttentionMetadata) -> tuple | None:
        """After :meth:`prepare`: the arguments that follow the scales in this step's calls of
        :meth:`native_decode_op`, or None when the step must go through :meth:`forward` (the default)."""
        return None

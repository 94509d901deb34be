"""Random AWQ-packed weights for tests and benchmarks of code that reads them (ours and other plugins')."""

from __future__ import annotations

import torch

from pagedllm_quant_awq.packing import pack_int4


def random_awq_weights(
    in_features: int, out_features: int, group_size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(qweight, qzeros, scales)`` in AWQ's GEMM layout: every 4-bit value and zero point occurs, and the
    float16 scales vary per group and column (keeping the weights near unit size), as in real checkpoints."""
    generator = torch.Generator().manual_seed(seed)
    num_groups = in_features // group_size
    quants = torch.randint(0, 16, (in_features, out_features), generator=generator)
    zeros = torch.randint(0, 16, (num_groups, out_features), generator=generator)
    scales = (torch.rand(num_groups, out_features, generator=generator) * 0.2 + 0.01).to(torch.float16)
    return pack_int4(quants), pack_int4(zeros), scales

"""Random ggml blocks for tests and benchmarks of code that reads them (ours and other plugins')."""

from __future__ import annotations

import numpy as np
import torch

from pagedllm_quant_gguf.blocks import BLOCK_FORMATS, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0

# The largest |quant * scale| each format multiplies its float16 factors by: random_blocks divides the
# factors by it to keep the weights near unit size.
LARGEST_MULTIPLIER = {Q4_0: 8, Q4_1: 15, Q5_0: 16, Q5_1: 31, Q8_0: 127, Q4_K: 63 * 31, Q5_K: 63 * 31, Q6_K: 127 * 32}


def random_blocks(out_features: int, num_blocks: int, quant_type: int, seed: int = 0) -> torch.Tensor:
    """uint8 ``[out_features, num_blocks * bytes_per_block]``: blocks of random bytes, so that every bit
    pattern of quants and packed scales occurs, with float16 factors that keep the weights finite and
    make rows differ in scale, as in real checkpoints."""
    fmt = BLOCK_FORMATS[quant_type]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(out_features, num_blocks, fmt.bytes_per_block), dtype=np.uint8)
    row_scales = rng.uniform(0.01, 2.0, size=(out_features, 1)) / LARGEST_MULTIPLIER[quant_type]
    for offset in fmt.float16_offsets:
        factors = (rng.uniform(0.1, 1.0, size=(out_features, num_blocks)) * row_scales).astype(np.float16)
        blocks[..., offset : offset + 2] = factors.view(np.uint8).reshape(out_features, num_blocks, 2)
    return torch.from_numpy(blocks.reshape(out_features, -1))

"""Finding and building the plugin's CUDA sources (once per machine, then cached by torch)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from types import ModuleType

CSRC = Path(__file__).parent / "csrc"
# The kernels, each compiled by nvcc; bindings.cpp is the only source that includes torch.
KERNEL_SOURCES = tuple(sorted(CSRC.glob("*.cu")))
BINDINGS_SOURCE = CSRC / "bindings.cpp"
HEADERS = tuple(sorted([*CSRC.glob("*.h"), *CSRC.glob("*.cuh")]))
# torch adds its own (COMMON_NVCC_FLAGS, the -gencode of the visible GPU) to these.
NVCC_FLAGS = ("-O3",)


def source_digest() -> str:
    """A hash of every source and header and of the flags: an edited kernel never loads a stale build."""
    digest = hashlib.sha256(" ".join(NVCC_FLAGS).encode())
    for path in (BINDINGS_SOURCE, *KERNEL_SOURCES, *HEADERS):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def load_kernels() -> ModuleType:
    """The compiled extension. The first call on a machine runs nvcc for the visible GPU's
    architecture (a minute or two) into torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default
    ``~/.cache/torch_extensions``); later calls, in any process, load it from there."""
    from torch.utils.cpp_extension import load

    return load(
        name=f"pagedllm_attention_cuda_{source_digest()}",
        sources=[str(BINDINGS_SOURCE), *map(str, KERNEL_SOURCES)],
        extra_include_paths=[str(CSRC)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=list(NVCC_FLAGS),
    )

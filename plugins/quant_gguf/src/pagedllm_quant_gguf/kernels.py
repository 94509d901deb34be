"""Loading the plugin's C++ quantized-matmul kernel."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from pagedllm_core.cpp_extensions import load_cpp_extension

SOURCE = Path(__file__).parent / "csrc" / "gguf_linear.cpp"


def load_kernels() -> ModuleType:
    """The compiled extension, exposing ``gguf_linear(x, blocks, quant_type, bias)`` (built on first use
    on a machine, then cached)."""
    return load_cpp_extension("pagedllm_quant_gguf", SOURCE)

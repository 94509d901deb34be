"""Loading the plugin's C++ attention kernels."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from pagedllm_core.cpp_extensions import load_cpp_extension

SOURCES = [Path(__file__).parent / "csrc" / name for name in ("paged_decode.cpp", "chunk_attention.cpp", "bindings.cpp")]


def load_kernels() -> ModuleType:
    """The compiled extension (built on first use on a machine, then cached)."""
    return load_cpp_extension("pagedllm_attention_cpu", *SOURCES)

"""Loading the plugin's C++ decode kernel."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from pagedllm_core.cpp_extensions import load_cpp_extension

SOURCE = Path(__file__).parent / "csrc" / "paged_decode.cpp"


def load_kernels() -> ModuleType:
    """The compiled extension (built on first use on a machine, then cached)."""
    return load_cpp_extension("pagedllm_attention_cpu", SOURCE)

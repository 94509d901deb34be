"""Compiling (once, then cached) and loading the plugin's C++ kernels."""

from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).parent / "csrc" / "paged_decode.cpp"


def compiler_flags() -> list[str]:
    """Optimise for the vector units every x86-64 machine of the last decade has (AVX2 + FMA)."""
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags += ["-mavx2", "-mfma"]
    return flags


@functools.cache
def load_kernels() -> ModuleType:
    """The compiled extension; the first call on a machine compiles it (about a minute) into torch's
    extension cache, later ones load it from there. The module name carries a hash of the source so
    an edited kernel never loads a stale build."""
    from torch.utils.cpp_extension import load

    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(compiler_flags()).encode()).hexdigest()[:12]
    return load(
        name=f"pagedllm_attention_cpu_{digest}",
        sources=[str(SOURCE)],
        extra_cflags=compiler_flags(),
        extra_ldflags=["-fopenmp"],
    )

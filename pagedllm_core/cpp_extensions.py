"""Compiling (once per machine, then cached by torch) and loading the C++ kernels plugins ship."""

from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path
from types import ModuleType


def compiler_flags() -> list[str]:
    """Optimise for the vector units every x86-64 machine of the last decade has (AVX2, FMA, F16C)."""
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags += ["-mavx2", "-mfma", "-mf16c"]
    return flags


@functools.cache
def load_cpp_extension(name: str, source: Path) -> ModuleType:
    """The extension compiled from ``source``; the first call on a machine compiles it (about a minute,
    needs a C++ compiler and ninja) into torch's extension cache, later ones load it from there.

    The module name carries a hash of the source and flags, so an edited kernel never loads a stale build.
    """
    from torch.utils.cpp_extension import load

    digest = hashlib.sha256(source.read_bytes() + " ".join(compiler_flags()).encode()).hexdigest()[:12]
    return load(
        name=f"{name}_{digest}",
        sources=[str(source)],
        extra_cflags=compiler_flags(),
        extra_ldflags=["-fopenmp"],
    )

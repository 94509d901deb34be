"""Compiling (once per machine, then cached by torch) and loading the C++ kernels plugins ship."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import platform
from pathlib import Path
from types import ModuleType

from pagedllm_core.cpu_flags import cpu_flags


def compiler_flags() -> list[str]:
    """Optimise for the vector units every x86-64 machine of the last decade has (AVX2, FMA, F16C), plus
    AVX-512's 16-float vectors and the int8 dot-product instructions (VNNI) where this machine has them: an
    extension is built on the machine that runs it, and the flags are part of its cached build's name."""
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags += ["-mavx2", "-mfma", "-mf16c"]
        if "avx512f" in cpu_flags():
            flags.append("-mavx512f")
        if "avx_vnni" in cpu_flags():
            flags.append("-mavxvnni")
        elif {"avx512_vnni", "avx512vl"} <= cpu_flags():
            flags += ["-mavx512vnni", "-mavx512vl"]
    return flags


@functools.cache
def load_cpp_extension(name: str, *sources: Path) -> ModuleType:
    """The extension compiled from ``sources``; the first call on a machine compiles it (about a minute,
    needs a C++ compiler and ninja) into torch's extension cache, later ones load it from there.

    The module name carries a hash of the sources, the headers beside them and the flags, so an edited
    kernel never loads a stale build.
    """
    from torch.utils.cpp_extension import load

    module_name = extension_module_name(name, *sources)
    with _build_lock(build_directory(module_name)):
        return load(
            name=module_name,
            sources=[str(source) for source in sources],
            extra_cflags=compiler_flags(),
            extra_ldflags=["-fopenmp"],
        )


def extension_module_name(name: str, *sources: Path) -> str:
    """The name (and so the build directory) of an extension: a hash of its sources and the headers beside
    them, the flags, where the sources are and which torch builds it. Checkouts or virtualenvs that share one
    extension cache then never take turns rebuilding one directory: torch's build file names the sources'
    paths and torch's headers."""
    import torch

    headers = sorted({header for source in sources for header in source.parent.glob("*.h")})
    key = [path.read_bytes() for path in (*sources, *headers)]
    key += [" ".join(compiler_flags()).encode(), *(str(source.resolve()).encode() for source in sources),
            str(Path(torch.__file__).parent).encode()]
    digest = hashlib.sha256(b"\0".join(key)).hexdigest()[:12]
    return f"{name}_{digest}"


def build_directory(module_name: str) -> Path:
    """Where torch builds and caches the extension (created if missing)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(module_name, verbose=False))


@contextlib.contextmanager
def _build_lock(build_directory: Path):
    """Hold an exclusive lock on the build directory while torch checks or builds the extension.

    torch's own lock is a file that a process killed while holding it (a worker stopped during
    start-up, a Ctrl-C during the first compile) leaves behind, and every later load then waits on
    it forever. This lock is an ``flock``, which the kernel releases when its holder dies; whoever
    holds it is the only loader of the directory, so a torch lock file found then is stale.
    """
    with open(build_directory / ".pagedllm-build.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            (build_directory / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)

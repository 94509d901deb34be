"""Compile the plugin's sources without a GPU: each .cu file with nvcc for sm_80 and sm_90, and
bindings.cpp (the one file that includes torch) through the host compiler's syntax check."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

from pagedllm_attention_cuda.kernels import BINDINGS_SOURCE, CSRC, KERNEL_SOURCES, NVCC_FLAGS

ARCHITECTURES = ("80", "90")
# The C++ standard of the oldest torch the plugin targets; later ones only add warnings in their headers.
CXX_STANDARD = "-std=c++17"
# A header CMake generates when it builds torch with CUDA; a CPU-only wheel lacks it, though its
# other c10/cuda headers include it. Its whole content in a CUDA build:
CMAKE_MACROS_HEADER = "c10/cuda/impl/cuda_cmake_macros.h"
CMAKE_MACROS = "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"


def nvcc_path() -> str | None:
    return shutil.which("nvcc")


def nvcc_command(source: Path, output: Path) -> list[str]:
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    gencode = [f"-gencode=arch=compute_{arch},code=sm_{arch}" for arch in ARCHITECTURES]
    return [nvcc_path(), CXX_STANDARD, *COMMON_NVCC_FLAGS, *NVCC_FLAGS, *gencode, f"-I{CSRC}", "-c", str(source),
            "-o", str(output)]


def toolkit_include_dirs() -> list[str]:
    """The CUDA headers nvcc itself uses (nvcc on the PATH may be a wrapper script, so ask it)."""
    dry_run = subprocess.run([nvcc_path(), "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True)
    return re.findall(r'-I"?([^"\s]+)"?', "".join(line for line in dry_run.stderr.splitlines() if "INCLUDES=" in line))


def bindings_command(shim_dir: Path) -> list[str]:
    from torch.utils.cpp_extension import include_paths

    if not any(Path(path, CMAKE_MACROS_HEADER).exists() for path in include_paths()):
        header = shim_dir / CMAKE_MACROS_HEADER
        header.parent.mkdir(parents=True, exist_ok=True)
        header.write_text(CMAKE_MACROS)
    includes = [*include_paths(), sysconfig.get_paths()["include"], *toolkit_include_dirs(), str(shim_dir), str(CSRC)]
    return [os.environ.get("CXX", "c++"), CXX_STANDARD, "-fsyntax-only", *(f"-I{path}" for path in includes),
            "-DTORCH_EXTENSION_NAME=pagedllm_attention_cuda_check", str(BINDINGS_SOURCE)]


def compile_all(work_dir: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run every compile at once (each is single-threaded); returns each source's finished process."""
    commands = {source.name: nvcc_command(source, work_dir / f"{source.stem}.o") for source in KERNEL_SOURCES}
    commands[BINDINGS_SOURCE.name] = bindings_command(work_dir / "shim")
    running = {
        name: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate()
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results

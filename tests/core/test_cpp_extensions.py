"""Loading the C++ kernels survives a loader that was killed while holding torch's build lock."""

import subprocess
import sys

import pytest

from pagedllm_core.cpp_extensions import build_directory, extension_module_name

LOAD_GGUF_KERNELS = "from pagedllm_quant_gguf.kernels import load_kernels; load_kernels(); print('loaded')"


def test_a_stale_torch_build_lock_does_not_hang_the_next_load():
    kernels = pytest.importorskip("pagedllm_quant_gguf.kernels")
    first = subprocess.run([sys.executable, "-c", LOAD_GGUF_KERNELS], capture_output=True, text=True, timeout=600)
    assert "loaded" in first.stdout, first.stderr[-2000:]
    # What a loader killed inside torch's FileBaton leaves behind; torch alone would wait on it forever.
    (build_directory(extension_module_name("pagedllm_quant_gguf", kernels.SOURCE)) / "lock").touch()
    second = subprocess.run([sys.executable, "-c", LOAD_GGUF_KERNELS], capture_output=True, text=True, timeout=120)
    assert "loaded" in second.stdout, second.stderr[-2000:]


def test_the_build_directory_is_per_source_path(tmp_path):
    # Two checkouts of the same kernel share torch's extension cache; each keeps its own build there,
    # since torch's build file names the source's path (one directory would be rebuilt in turns).
    source = tmp_path / "first" / "kernel.cpp"
    copy = tmp_path / "second" / "kernel.cpp"
    for path in (source, copy):
        path.parent.mkdir()
        path.write_text("// the same source\n")
    assert extension_module_name("kernel", source) == extension_module_name("kernel", source)
    assert extension_module_name("kernel", source) != extension_module_name("kernel", copy)

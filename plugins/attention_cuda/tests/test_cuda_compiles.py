import pytest
from nvcc_check import compile_all, nvcc_path
from pagedllm_attention_cuda.kernels import KERNEL_SOURCES


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc is not on the PATH (the CUDA toolkit is not installed)")
def test_every_source_compiles_for_ampere_and_hopper(tmp_path):
    results = compile_all(tmp_path)

    assert {source.name for source in KERNEL_SOURCES} == {"cache_write.cu", "paged_decode.cu", "paged_prefill.cu"}
    failures = {name: result.stderr for name, result in results.items() if result.returncode != 0}
    assert not failures, "\n\n".join(f"{name}:\n{stderr}" for name, stderr in failures.items())
    assert all((tmp_path / f"{source.stem}.o").stat().st_size > 0 for source in KERNEL_SOURCES)

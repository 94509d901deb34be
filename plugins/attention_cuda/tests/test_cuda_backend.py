import re
import subprocess
import sys

import pytest
import torch
from pagedllm_attention_cuda import backend as cuda_backend
from pagedllm_attention_cuda.backend import CudaAttentionBackend
from pagedllm_attention_cuda.decode_plan import MAX_PARTITION_SIZE, MIN_PARTITION_SIZE, plan_decode_partitions

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.registry import PluginKind, default_registry


def make_spec(**changes) -> AttentionSpec:
    fields = dict(
        num_heads=8,
        num_kv_heads=2,
        head_size=128,
        scale=128**-0.5,
        block_size=16,
        kv_cache_dtype=torch.bfloat16,
        device=torch.device("cuda"),
    )
    fields.update(changes)
    return AttentionSpec(**fields)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_supported_spec_on_a_gpu_has_no_reasons():
    assert CudaAttentionBackend.unsupported_reasons(make_spec()) == []


def test_cpu_device_is_a_reason():
    reasons = CudaAttentionBackend.unsupported_reasons(make_spec(device=torch.device("cpu")))
    assert reasons == ["device cpu unsupported (cuda only)"]


def test_missing_gpu_and_toolkit_are_reasons(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert CudaAttentionBackend.unsupported_reasons(make_spec()) == ["no CUDA device is visible"]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(cuda_backend, "_cuda_home", lambda: None)
    reasons = CudaAttentionBackend.unsupported_reasons(make_spec())
    assert "no CUDA toolkit (nvcc) to build the kernels; install it or set CUDA_HOME" in reasons
    assert "KV cache dtype torch.bfloat16 needs compute capability 8.0+" in reasons


def test_cpu_only_torch_is_a_reason(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    reasons = CudaAttentionBackend.unsupported_reasons(make_spec())
    assert reasons == [f"this torch ({torch.__version__}) is built without CUDA"]


def test_reasons_name_the_unsupported_settings():
    reasons = CudaAttentionBackend.unsupported_reasons(make_spec(head_size=72, kv_cache_dtype=torch.float64))
    assert "head size 72 unsupported (64, 80, 96, 128, 256 are)" in reasons
    assert any(reason.startswith("KV cache dtype torch.float64 unsupported") for reason in reasons)

    reasons = CudaAttentionBackend.unsupported_reasons(make_spec(num_heads=6, num_kv_heads=4))
    assert "6 query heads do not divide into 4 KV head groups" in reasons

    reasons = CudaAttentionBackend.unsupported_reasons(make_spec(kv_cache_dtype=torch.float16, dtype=torch.bfloat16))
    assert any("differs from the model's torch.bfloat16" in reason for reason in reasons)


def test_registered_lazily_through_the_entry_point_above_triton():
    registry = default_registry()
    registration = registry.get(PluginKind.ATTENTION_BACKEND, "cuda")
    assert registration.target == "pagedllm_attention_cuda.backend:CudaAttentionBackend"
    assert registration.plugin_name == "attention_cuda"
    assert registration.load() is CudaAttentionBackend
    triton = registry.get(PluginKind.ATTENTION_BACKEND, "triton")
    assert registration.auto_priority["cuda"] > triton.auto_priority["cuda"]


def test_loading_the_plugin_and_asking_for_reasons_builds_nothing():
    script = (
        "import sys, torch\n"
        "import pagedllm_attention_cuda\n"
        "from pagedllm_attention_cuda.backend import CudaAttentionBackend\n"
        "from pagedllm_core.attention.backend import AttentionSpec\n"
        "pagedllm_attention_cuda.register_attention_backends(lambda *args, **kwargs: None)\n"
        "spec = AttentionSpec(8, 2, 64, 0.125, 16, torch.float16, torch.device('cpu'))\n"
        "CudaAttentionBackend.unsupported_reasons(spec)\n"
        "assert 'torch.utils.cpp_extension' not in sys.modules, 'the extension builder was imported'\n"
        "assert 'pagedllm_attention_cuda.kernels' not in sys.modules, 'the kernels were loaded'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_decode_plan_keeps_short_contexts_whole_and_splits_long_ones():
    # Many sequences fill the GPU: partitions stay at their longest.
    assert plan_decode_partitions(256, 32, 8, 8192, num_target_blocks=264).partition_size == MAX_PARTITION_SIZE
    # A short context is one partition, however few blocks that gives.
    assert plan_decode_partitions(1, 32, 8, 200, num_target_blocks=264).num_partitions == 1

    # One sequence x 8 KV heads: 64 partitions of 128 positions give 512 blocks, enough for 264.
    plan = plan_decode_partitions(1, 32, 8, 8192, num_target_blocks=264)
    assert plan.partition_size == 128
    assert plan.num_partitions * plan.partition_size >= 8192 > (plan.num_partitions - 1) * plan.partition_size

    # 4 sequences x 8 KV heads = 32 blocks a partition: even 128-position partitions give only 256.
    assert plan_decode_partitions(4, 64, 8, 1000, num_target_blocks=264).partition_size == MIN_PARTITION_SIZE
    # A query group above 8 heads takes two blocks per KV head.
    assert plan_decode_partitions(1, 16, 1, 512, num_target_blocks=4).num_partitions == 2


def test_head_sizes_agree_between_python_and_the_kernels():
    from pagedllm_attention_cuda.kernels import CSRC

    declared = re.search(r"kSupportedHeadSizes\[\] = \{([^}]*)\}", (CSRC / "pagedllm_cuda.h").read_text()).group(1)
    dispatched = re.findall(r"case (\d+):", (CSRC / "common.cuh").read_text())
    assert [int(size) for size in declared.split(",")] == list(cuda_backend.SUPPORTED_HEAD_SIZES)
    assert [int(size) for size in dispatched] == list(cuda_backend.SUPPORTED_HEAD_SIZES)

import importlib.util
import subprocess
import sys

import pytest
import torch
from pagedllm_attention_triton.backend import TritonAttentionBackend

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.registry import PluginKind, default_registry

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed (pip install triton)"
)


def make_spec(**changes) -> AttentionSpec:
    fields = dict(
        num_heads=8,
        num_kv_heads=2,
        head_size=64,
        scale=0.125,
        block_size=16,
        kv_cache_dtype=torch.float16,
        device=torch.device("cuda" if torch.cuda.is_available() else "cpu"),
    )
    fields.update(changes)
    return AttentionSpec(**fields)


@needs_triton
def test_supported_spec_has_no_reasons():
    assert TritonAttentionBackend.unsupported_reasons(make_spec()) == []


def test_reasons_name_the_unsupported_settings():
    reasons = TritonAttentionBackend.unsupported_reasons(make_spec(head_size=72, kv_cache_dtype=torch.float64))
    assert any("head size 72 unsupported (64, 80, 96, 128 are)" in reason for reason in reasons)
    assert any("KV cache dtype torch.float64 unsupported" in reason for reason in reasons)
    reasons = TritonAttentionBackend.unsupported_reasons(make_spec(num_heads=6, num_kv_heads=4))
    assert any("6 query heads do not divide into 4 KV head groups" in reason for reason in reasons)


def test_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reasons = TritonAttentionBackend.unsupported_reasons(make_spec(device=torch.device("cpu")))
    assert reasons == ["device cpu needs TRITON_INTERPRET=1 (Triton's interpreter: correct but slow)"]


def test_missing_triton_is_a_reason(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "triton" else find_spec(name))
    reasons = TritonAttentionBackend.unsupported_reasons(make_spec())
    assert "triton is not installed (pip install triton)" in reasons


def test_registered_lazily_through_the_entry_point():
    registration = default_registry().get(PluginKind.ATTENTION_BACKEND, "triton")
    assert registration.target == "pagedllm_attention_triton.backend:TritonAttentionBackend"
    assert registration.plugin_name == "attention_triton"
    assert registration.load() is TritonAttentionBackend


def test_loading_the_plugin_and_asking_for_reasons_does_not_import_triton():
    script = (
        "import sys, torch\n"
        "import pagedllm_attention_triton\n"
        "from pagedllm_attention_triton.backend import TritonAttentionBackend\n"
        "from pagedllm_core.attention.backend import AttentionSpec\n"
        "pagedllm_attention_triton.register_attention_backends(lambda *args, **kwargs: None)\n"
        "spec = AttentionSpec(8, 2, 64, 0.125, 16, torch.float16, torch.device('cpu'))\n"
        "TritonAttentionBackend.unsupported_reasons(spec)\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)

"""Loading plugins from the ``pagedllm`` entry-point group: failures, the filter, the example plugin."""

from __future__ import annotations

import pytest
import torch

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend
from pagedllm_core.plugins import DEFAULT_PLUGINS, PLUGIN_FILTER_ENV, load_plugins
from pagedllm_core.registry import PluginKind, Registry, default_registry, installed_plugins

WORKING_PLUGIN_SOURCE = '''
from pagedllm_core.hookspecs import hookimpl


@hookimpl
def register_attention_backends(register):
    register("working_for_test", "pagedllm_core.default_plugins.torch_attention:TorchAttentionBackend")
'''

BROKEN_PLUGIN_SOURCE = 'raise ImportError("libcuda.so.1 not found")\n'

EXAMPLE_PLUGIN_MISSING = "the example plugin is not installed: pip install -e tests/plugins/example_plugin"


@pytest.fixture
def working_and_broken_plugins(install_fake_distribution, monkeypatch):
    monkeypatch.delenv(PLUGIN_FILTER_ENV, raising=False)
    install_fake_distribution("pagedllm-working-for-test", "working_for_test", WORKING_PLUGIN_SOURCE)
    install_fake_distribution("pagedllm-broken-for-test", "broken_for_test", BROKEN_PLUGIN_SOURCE)


def test_broken_entry_point_is_recorded_and_the_others_still_load(working_and_broken_plugins):
    loaded = load_plugins()

    [error] = [error for error in loaded.load_errors if error.name == "broken_for_test"]
    assert error.distribution == "pagedllm-broken-for-test"
    assert error.error == "ImportError: libcuda.so.1 not found"
    assert not loaded.manager.has_plugin("broken_for_test")
    assert loaded.distributions["working_for_test"] == ("pagedllm-working-for-test", "0.1.0")
    registry = Registry.from_plugin_manager(loaded.manager)
    assert registry.resolve(PluginKind.ATTENTION_BACKEND, "working_for_test") is TorchAttentionBackend


def test_built_in_plugins_load_like_any_plugin(working_and_broken_plugins):
    loaded = load_plugins()

    for module_name in DEFAULT_PLUGINS:
        assert loaded.manager.has_plugin(module_name)
        assert loaded.distributions[module_name][0] == "pagedllm"
    registry = Registry.from_plugin_manager(loaded.manager)
    assert registry.get(PluginKind.ATTENTION_BACKEND, "torch").plugin_name in DEFAULT_PLUGINS


def test_filter_env_loads_only_the_listed_entry_points(working_and_broken_plugins, monkeypatch):
    monkeypatch.setenv(PLUGIN_FILTER_ENV, "working_for_test, no_such_plugin")

    loaded = load_plugins()

    entry_point_plugins = set(loaded.distributions) - set(DEFAULT_PLUGINS)
    assert entry_point_plugins == {"working_for_test"}
    assert loaded.load_errors == []


def test_empty_filter_env_loads_built_ins_only(working_and_broken_plugins, monkeypatch):
    monkeypatch.setenv(PLUGIN_FILTER_ENV, "")

    loaded = load_plugins()

    assert set(loaded.distributions) == set(DEFAULT_PLUGINS)
    assert loaded.load_errors == []


def test_example_plugin_loads_from_its_entry_point():
    loaded = installed_plugins()

    assert loaded.distributions.get("example_backend") == ("pagedllm-example-backend", "0.1.0"), EXAMPLE_PLUGIN_MISSING
    registration = default_registry().get(PluginKind.ATTENTION_BACKEND, "example")
    assert registration.plugin_name == "example_backend"
    assert registration.target == "pagedllm_example_backend.backend:ExampleAttentionBackend"


def run_one_prefill_step(backend: TorchAttentionBackend) -> torch.Tensor:
    """One sequence prefilling 6 tokens into blocks 1 and 0 (in that order) of a fresh 3-block cache."""
    metadata = AttentionMetadata(
        slot_mapping=torch.tensor([4, 5, 6, 7, 0, 1]),
        query_start_loc=torch.tensor([0, 6], dtype=torch.int32),
        seq_lens=torch.tensor([6], dtype=torch.int32),
        block_tables=torch.tensor([[1, 0]], dtype=torch.int32),
        max_query_len=6,
        max_seq_len=6,
    )
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(6, 4, 8, generator=generator)
    key, value = torch.randn(2, 6, 2, 8, generator=generator)
    kv_cache = torch.zeros(2, 3, 4, 2, 8)
    backend.prepare(metadata)
    return backend.forward(query, key, value, kv_cache, metadata)


def test_example_backend_delegates_to_torch_and_counts_forward_calls():
    backend_class = default_registry().resolve(PluginKind.ATTENTION_BACKEND, "example")
    assert issubclass(backend_class, TorchAttentionBackend)
    spec = AttentionSpec(
        num_heads=4, num_kv_heads=2, head_size=8, scale=8**-0.5, block_size=4,
        kv_cache_dtype=torch.float32, device=torch.device("cpu"),
    )  # fmt: skip
    num_calls_before = backend_class.num_forward_calls

    example_output = run_one_prefill_step(backend_class(spec))
    assert backend_class.num_forward_calls == num_calls_before + 1
    torch_output = run_one_prefill_step(TorchAttentionBackend(spec))
    assert backend_class.num_forward_calls == num_calls_before + 1

    torch.testing.assert_close(example_output, torch_output)

"""The registry built from plugin objects: resolving names, helpful errors, lazy targets."""

from __future__ import annotations

import sys

import pytest
from fake_plugins import AttentionBackendsPlugin, EveryKindPlugin, FakeAttentionBackend, FakeSampler

from pagedllm_core.errors import ConfigError, DuplicateRegistrationError, UnknownPluginTargetError
from pagedllm_core.hookspecs import hookimpl
from pagedllm_core.registry import PluginKind, Registry

LAZY_MODULE = "pagedllm_test_lazy_backend"


@pytest.mark.parametrize("kind", list(PluginKind))
def test_every_kind_resolves_by_name_to_its_plugin(plugin_manager, kind):
    plugin_manager.register(EveryKindPlugin(), name="every_kind")
    registry = Registry.from_plugin_manager(plugin_manager)

    registration = registry.get(kind, "fake")
    assert registration.plugin_name == "every_kind"
    assert registration.description.startswith("fake")
    assert registry.resolve(kind, "fake").__name__.startswith("Fake")


def test_resolve_returns_the_registered_class(plugin_manager):
    plugin_manager.register(EveryKindPlugin(), name="every_kind")
    registry = Registry.from_plugin_manager(plugin_manager)

    assert registry.resolve(PluginKind.ATTENTION_BACKEND, "fake") is FakeAttentionBackend
    assert registry.resolve(PluginKind.SAMPLER, "fake") is FakeSampler


def test_unknown_name_error_lists_available_names(plugin_manager):
    plugin_manager.register(AttentionBackendsPlugin({"alpha": FakeAttentionBackend, "beta": FakeAttentionBackend}))
    registry = Registry.from_plugin_manager(plugin_manager)

    with pytest.raises(UnknownPluginTargetError) as error:
        registry.resolve(PluginKind.ATTENTION_BACKEND, "gamma")
    message = str(error.value)
    assert "'gamma'" in message
    assert "'alpha'" in message and "'beta'" in message


def test_unknown_name_of_a_kind_nobody_registers_says_none_installed(plugin_manager):
    registry = Registry.from_plugin_manager(plugin_manager)

    with pytest.raises(UnknownPluginTargetError, match="none installed"):
        registry.resolve(PluginKind.QUANTIZER, "awq")


def test_duplicate_name_error_names_both_plugins(plugin_manager):
    plugin_manager.register(AttentionBackendsPlugin({"shared": FakeAttentionBackend}), name="first_plugin")
    plugin_manager.register(AttentionBackendsPlugin({"shared": FakeAttentionBackend}), name="second_plugin")

    with pytest.raises(DuplicateRegistrationError) as error:
        Registry.from_plugin_manager(plugin_manager)
    message = str(error.value)
    assert "'shared'" in message
    assert "first_plugin" in message and "second_plugin" in message


def test_same_name_for_different_kinds_is_no_conflict(plugin_manager):
    plugin_manager.register(EveryKindPlugin(), name="every_kind")
    registry = Registry.from_plugin_manager(plugin_manager)

    assert all(registry.names(kind) == ["fake"] for kind in PluginKind)


@pytest.fixture
def lazy_backend_module(tmp_path, monkeypatch):
    """A module on sys.path defining ``LazyBackend``, not yet imported."""
    (tmp_path / f"{LAZY_MODULE}.py").write_text("class LazyBackend:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{LAZY_MODULE}:LazyBackend"
    sys.modules.pop(LAZY_MODULE, None)


def test_lazy_target_is_imported_only_on_resolve(plugin_manager, lazy_backend_module):
    plugin_manager.register(AttentionBackendsPlugin({"lazy": lazy_backend_module}), name="lazy_plugin")
    registry = Registry.from_plugin_manager(plugin_manager)
    assert LAZY_MODULE not in sys.modules

    backend_class = registry.resolve(PluginKind.ATTENTION_BACKEND, "lazy")

    assert backend_class.__name__ == "LazyBackend"
    assert backend_class.__module__ == LAZY_MODULE
    assert LAZY_MODULE in sys.modules


def test_lazy_target_with_missing_module_names_the_path_and_plugin(plugin_manager):
    plugin_manager.register(AttentionBackendsPlugin({"broken": "pagedllm_no_such_module:Backend"}), name="bad_plugin")
    registry = Registry.from_plugin_manager(plugin_manager)

    with pytest.raises(ConfigError) as error:
        registry.resolve(PluginKind.ATTENTION_BACKEND, "broken")
    message = str(error.value)
    assert "'broken'" in message and "'bad_plugin'" in message
    assert "pagedllm_no_such_module:Backend" in message
    assert "ModuleNotFoundError" in message


def test_lazy_target_with_missing_class_names_the_path(plugin_manager):
    target = "pagedllm_core.attention.backend:NoSuchBackend"
    plugin_manager.register(AttentionBackendsPlugin({"broken": target}), name="bad_plugin")
    registry = Registry.from_plugin_manager(plugin_manager)

    with pytest.raises(ConfigError, match="AttributeError") as error:
        registry.resolve(PluginKind.ATTENTION_BACKEND, "broken")
    assert target in str(error.value)


class PrioritizedBackendsPlugin:
    """Three backends: two join ``auto`` on the CPU with different priorities, one never does."""

    @hookimpl
    def register_attention_backends(self, register):
        register("slow", FakeAttentionBackend, "joins auto last", auto_priority={"cpu": 1, "cuda": 5})
        register("fast", FakeAttentionBackend, "joins auto first on the CPU", auto_priority={"cpu": 9})
        register("manual", FakeAttentionBackend, "only by name")


def test_auto_candidates_are_the_backends_that_declared_a_priority_highest_first(plugin_manager):
    plugin_manager.register(PrioritizedBackendsPlugin(), name="prioritized")
    registry = Registry.from_plugin_manager(plugin_manager)

    assert registry.auto_candidates(PluginKind.ATTENTION_BACKEND, "cpu") == ["fast", "slow"]
    assert registry.auto_candidates(PluginKind.ATTENTION_BACKEND, "cuda") == ["slow"]
    assert registry.auto_candidates(PluginKind.ATTENTION_BACKEND, "mps") == []

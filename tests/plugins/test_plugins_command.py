"""The ``pagedllm plugins`` listing, as data and as text."""

from __future__ import annotations

import io
import json

from fake_plugins import AttentionBackendsPlugin, EveryKindPlugin, FailingPlugin, FakeAttentionBackend, NothingPlugin

from pagedllm_core.entrypoints.plugins_command import format_plugins_listing, plugins_listing, print_plugins_listing
from pagedllm_core.plugins import LoadedPlugins, PluginLoadError
from pagedllm_core.registry import PluginKind


def loaded_plugins(plugin_manager, plugins: dict[str, object], load_errors=()) -> LoadedPlugins:
    loaded = LoadedPlugins(plugin_manager, load_errors=list(load_errors))
    for name, plugin in plugins.items():
        plugin_manager.register(plugin, name=name)
        loaded.distributions[name] = (f"dist-{name}", "1.2.3")
    return loaded


def test_listing_names_each_plugin_its_distribution_and_registrations(plugin_manager):
    broken = PluginLoadError("broken", "pagedllm-broken", "ImportError: no triton")
    loaded = loaded_plugins(plugin_manager, {"every_kind": EveryKindPlugin(), "empty": NothingPlugin()}, [broken])

    listing = plugins_listing(loaded)

    every_kind, empty = listing["plugins"]
    assert (every_kind["name"], every_kind["distribution"], every_kind["version"]) == ("every_kind", "dist-every_kind", "1.2.3")
    assert set(every_kind["registrations"]) == {kind.name.lower() for kind in PluginKind}
    assert every_kind["registrations"]["attention_backend"] == [
        {"name": "fake", "target": "fake_plugins:FakeAttentionBackend", "description": "fake attention"}
    ]
    assert empty["registrations"] == {}
    assert listing["load_errors"] == [{"name": "broken", "distribution": "pagedllm-broken", "error": "ImportError: no triton"}]
    assert listing["registry_error"] is None
    assert json.loads(json.dumps(listing)) == listing


def test_text_listing_shows_registrations_nothing_and_load_errors(plugin_manager):
    broken = PluginLoadError("broken", "pagedllm-broken", "ImportError: no triton")
    loaded = loaded_plugins(plugin_manager, {"every_kind": EveryKindPlugin(), "empty": NothingPlugin()}, [broken])

    text = format_plugins_listing(plugins_listing(loaded))

    assert "every_kind (dist-every_kind 1.2.3)" in text
    assert "attention backend 'fake' - fake attention" in text
    assert "output constraint 'fake' - fake output constraint" in text
    assert "empty (dist-empty 1.2.3)\n    registers nothing" in text
    assert "Load errors:\n  broken (pagedllm-broken): ImportError: no triton" in text


def test_lazy_targets_are_listed_without_importing_them(plugin_manager):
    loaded = loaded_plugins(plugin_manager, {"lazy": AttentionBackendsPlugin({"lazy": "pagedllm_no_such_module:Backend"})})

    [plugin] = plugins_listing(loaded)["plugins"]

    assert plugin["registrations"]["attention_backend"][0]["target"] == "pagedllm_no_such_module:Backend"
    assert plugin["error"] is None


def test_name_clash_is_reported_and_both_plugins_still_listed(plugin_manager):
    plugins = {
        "first": AttentionBackendsPlugin({"shared": FakeAttentionBackend}),
        "second": AttentionBackendsPlugin({"shared": FakeAttentionBackend}),
    }
    listing = plugins_listing(loaded_plugins(plugin_manager, plugins))

    assert [plugin["registrations"]["attention_backend"][0]["name"] for plugin in listing["plugins"]] == ["shared"] * 2
    assert "first" in listing["registry_error"] and "second" in listing["registry_error"]
    assert "Registry error:" in format_plugins_listing(listing)


def test_plugin_whose_hook_raises_is_listed_with_the_error(plugin_manager):
    loaded = loaded_plugins(plugin_manager, {"failing": FailingPlugin(), "every_kind": EveryKindPlugin()})

    failing, every_kind = plugins_listing(loaded)["plugins"]

    assert failing["error"] == "RuntimeError: sampler registration exploded"
    assert every_kind["error"] is None and every_kind["registrations"]


def test_printed_json_lists_the_installed_example_plugin():
    out = io.StringIO()

    print_plugins_listing(as_json=True, file=out)

    plugins = {plugin["name"]: plugin for plugin in json.loads(out.getvalue())["plugins"]}
    assert plugins["example_backend"]["distribution"] == "pagedllm-example-backend"
    assert plugins["pagedllm_core.default_plugins.torch_attention"]["registrations"]["attention_backend"][0]["name"] == "torch"

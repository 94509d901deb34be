"""The plugin manager: built-in plugins plus whatever is installed under the ``pagedllm`` entry-point group."""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from pagedllm_core import hookspecs

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
PLUGIN_FILTER_ENV = "PAGEDLLM_PLUGINS"

# The core's own implementations register through the same hooks as any third-party plugin.
DEFAULT_PLUGINS = (
    "pagedllm_core.default_plugins.torch_attention",
    "pagedllm_core.default_plugins.default_sampler",
    "pagedllm_core.default_plugins.default_scheduler",
)


@dataclass(frozen=True)
class PluginLoadError:
    """An entry point that could not be imported; the rest of the plugins still load."""

    name: str
    distribution: str
    error: str


@dataclass
class LoadedPlugins:
    """A plugin manager together with where each plugin came from and what failed to load."""

    manager: pluggy.PluginManager
    distributions: dict[str, tuple[str, str]] = field(default_factory=dict)
    load_errors: list[PluginLoadError] = field(default_factory=list)


def allowed_entry_points() -> set[str] | None:
    """Names listed in ``PAGEDLLM_PLUGINS``, or ``None`` when the variable is unset (load all)."""
    value = os.environ.get(PLUGIN_FILTER_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def new_plugin_manager() -> pluggy.PluginManager:
    """An empty plugin manager that knows pagedllm's hook specs."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


def load_plugins() -> LoadedPlugins:
    """Register the built-in plugins, then every allowed entry point of the ``pagedllm`` group."""
    loaded = LoadedPlugins(new_plugin_manager())
    core_version = metadata.version("pagedllm") if _is_installed("pagedllm") else "dev"
    for module_name in DEFAULT_PLUGINS:
        loaded.manager.register(importlib.import_module(module_name), name=module_name)
        loaded.distributions[module_name] = ("pagedllm", core_version)

    allowed = allowed_entry_points()
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and entry_point.name not in allowed:
            continue
        if loaded.manager.has_plugin(entry_point.name):
            continue  # the same distribution seen twice on sys.path
        distribution = entry_point.dist.name if entry_point.dist else "?"
        try:
            plugin = entry_point.load()
            loaded.manager.register(plugin, name=entry_point.name)
        except Exception as error:  # noqa: BLE001 - one broken plugin must not take the engine down
            logger.warning("plugin %r from %s failed to load: %s", entry_point.name, distribution, error)
            loaded.load_errors.append(PluginLoadError(entry_point.name, distribution, f"{type(error).__name__}: {error}"))
            continue
        version = entry_point.dist.version if entry_point.dist else "?"
        loaded.distributions[entry_point.name] = (distribution, version)
    return loaded


def _is_installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True

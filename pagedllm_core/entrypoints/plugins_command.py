"""``pagedllm plugins``: what each loaded plugin registers, and which plugins failed to load."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import pluggy

from pagedllm_core.plugins import LoadedPlugins, new_plugin_manager
from pagedllm_core.registry import PluginKind, Registration, Registry, installed_plugins


def plugins_listing(loaded: LoadedPlugins | None = None) -> dict[str, Any]:
    """The listing as plain data (what ``pagedllm plugins --json`` prints).

    ``{"plugins": [{"name", "distribution", "version", "registrations": {kind: [{"name", "target",
    "description"}]}, "error"}], "load_errors": [{"name", "distribution", "error"}],
    "registry_error"}``. ``registrations`` is empty for a plugin that registers nothing; ``error``
    is set when calling the plugin's hooks failed; ``registry_error`` is set when the plugins
    together cannot form a registry (two of them registered the same name, or a hook raised).

    :param loaded: the plugins to describe; defaults to the installed ones.
    """
    loaded = loaded or installed_plugins()
    plugins = [
        _describe_plugin(name, plugin, loaded)
        for name, plugin in loaded.manager.list_name_plugin()
        if plugin is not None
    ]
    load_errors = [
        {"name": error.name, "distribution": error.distribution, "error": error.error} for error in loaded.load_errors
    ]
    _, registry_error = _build_registry(loaded.manager)
    return {"plugins": plugins, "load_errors": load_errors, "registry_error": registry_error}


def format_plugins_listing(listing: dict[str, Any]) -> str:
    """The human-readable form of :func:`plugins_listing`'s result."""
    lines = ["Plugins:"]
    for plugin in listing["plugins"]:
        lines.append(f"  {plugin['name']} ({plugin['distribution']} {plugin['version']})")
        if plugin["error"]:
            lines.append(f"    failed to register: {plugin['error']}")
        elif not plugin["registrations"]:
            lines.append("    registers nothing")
        for kind, registrations in plugin["registrations"].items():
            label = kind.replace("_", " ")
            for registration in registrations:
                description = f" - {registration['description']}" if registration["description"] else ""
                lines.append(f"    {label} {registration['name']!r}{description}")
    if listing["load_errors"]:
        lines.append("Load errors:")
        for error in listing["load_errors"]:
            lines.append(f"  {error['name']} ({error['distribution']}): {error['error']}")
    else:
        lines.append("Load errors: none")
    if listing["registry_error"]:
        lines.append(f"Registry error: {listing['registry_error']}")
    return "\n".join(lines)


def print_plugins_listing(as_json: bool = False, file: TextIO | None = None) -> None:
    """Print the installed plugins' listing, as JSON or as text; the body of ``pagedllm plugins``."""
    listing = plugins_listing()
    text = json.dumps(listing, indent=2) if as_json else format_plugins_listing(listing)
    print(text, file=file or sys.stdout)


def _describe_plugin(name: str, plugin: object, loaded: LoadedPlugins) -> dict[str, Any]:
    distribution, version = loaded.distributions.get(name, ("?", "?"))
    description: dict[str, Any] = {
        "name": name,
        "distribution": distribution,
        "version": version,
        "registrations": {},
        "error": None,
    }
    # A registry of this plugin alone attributes every registration to it, and a name clash
    # between two plugins does not hide what each of them registers.
    manager = new_plugin_manager()
    manager.register(plugin, name=name)
    registry, description["error"] = _build_registry(manager)
    if registry is None:
        return description
    for kind in PluginKind:
        registrations = registry.registrations(kind)
        if registrations:
            description["registrations"][kind.name.lower()] = [_describe_registration(r) for r in registrations]
    return description


def _build_registry(manager: pluggy.PluginManager) -> tuple[Registry | None, str | None]:
    """The registry, or the error that prevented it: the listing is where a broken plugin must show up."""
    try:
        return Registry.from_plugin_manager(manager), None
    except Exception as error:  # noqa: BLE001 - a plugin's hook may raise anything
        return None, f"{type(error).__name__}: {error}"


def _describe_registration(registration: Registration) -> dict[str, str]:
    target = registration.target
    # Lazy targets are shown as given: the listing must not import what nobody selected.
    if not isinstance(target, str):
        target = f"{target.__module__}:{target.__qualname__}"
    return {"name": registration.name, "target": target, "description": registration.description}

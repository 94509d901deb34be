"""Name -> implementation, per plugin kind, built once from the plugin manager's ``register_*`` hooks."""

from __future__ import annotations

import enum
import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import pluggy

from pagedllm_core.errors import ConfigError, DuplicateRegistrationError, UnknownPluginTargetError
from pagedllm_core.plugins import LoadedPlugins, load_plugins


class PluginKind(enum.Enum):
    """The six things a plugin can provide; the value is the hook that registers them."""

    ATTENTION_BACKEND = "register_attention_backends"
    SAMPLER = "register_samplers"
    SCHEDULER = "register_schedulers"
    QUANTIZER = "register_quantizers"
    LORA_MANAGER = "register_lora_managers"
    OUTPUT_CONSTRAINT = "register_output_constraints"

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")

    @property
    def config_field(self) -> str | None:
        """The ``EngineConfig`` field that picks this kind's implementation by name (None: not picked by config)."""
        return _CONFIG_FIELDS.get(self)


_CONFIG_FIELDS = {
    PluginKind.ATTENTION_BACKEND: "attention_backend",
    PluginKind.SAMPLER: "sampler",
    PluginKind.SCHEDULER: "scheduler",
    PluginKind.QUANTIZER: "quantization",
    PluginKind.OUTPUT_CONSTRAINT: "structured_outputs_backend",
}


@dataclass(frozen=True)
class Registration:
    """One implementation a plugin registered: its name, class (or lazy path) and owner."""

    kind: PluginKind
    name: str
    target: type | str
    description: str
    plugin_name: str
    # Where ``auto`` may pick this implementation (a device type for attention backends, a checkpoint
    # format for quantizers) -> its priority there; the highest that can run wins.
    auto_priority: Mapping[str, int] = field(default_factory=dict)

    def load(self) -> type:
        """The implementing class, importing a lazy ``"module:Class"`` target on first use."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attribute = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ConfigError(
                f"{self.kind.label} {self.name!r} from plugin {self.plugin_name!r} could not be imported "
                f"from {self.target!r}: {type(error).__name__}: {error}"
            ) from error


class Registry:
    """Every registration of every kind; resolves the names config picks."""

    def __init__(self, registrations: list[Registration]):
        self._by_kind: dict[PluginKind, dict[str, Registration]] = {kind: {} for kind in PluginKind}
        for registration in registrations:
            names = self._by_kind[registration.kind]
            existing = names.get(registration.name)
            if existing is not None:
                raise DuplicateRegistrationError(
                    f"{registration.kind.label} {registration.name!r} is registered by both plugin "
                    f"{existing.plugin_name!r} and plugin {registration.plugin_name!r}"
                )
            names[registration.name] = registration

    @classmethod
    def from_plugin_manager(cls, manager: pluggy.PluginManager) -> Registry:
        """Call every ``register_*`` hook implementation, remembering which plugin registered what."""
        registrations: list[Registration] = []
        for kind in PluginKind:
            # Implementations are called one by one (not through the hook caller) so that each
            # registration can be attributed to its plugin for listings and duplicate errors.
            for hook_impl in getattr(manager.hook, kind.value).get_hookimpls():

                def register(
                    name: str,
                    target: type | str,
                    description: str = "",
                    auto_priority: Mapping[str, int] | None = None,
                    *,
                    _impl=hook_impl,
                    _kind=kind,
                ):
                    registrations.append(
                        Registration(_kind, name, target, description, _impl.plugin_name, dict(auto_priority or {}))
                    )

                hook_impl.function(register=register)
        return cls(registrations)

    def names(self, kind: PluginKind) -> list[str]:
        return sorted(self._by_kind[kind])

    def registrations(self, kind: PluginKind) -> list[Registration]:
        return [self._by_kind[kind][name] for name in self.names(kind)]

    def get(self, kind: PluginKind, name: str) -> Registration:
        registration = self._by_kind[kind].get(name)
        if registration is None:
            available = ", ".join(repr(n) for n in self.names(kind)) or "none installed"
            raise UnknownPluginTargetError(f"unknown {kind.label} {name!r}; available: {available}")
        return registration

    def auto_candidates(self, kind: PluginKind, context: str) -> list[str]:
        """The names that declared an ``auto_priority`` for ``context``, highest priority first."""
        ranked = [r for r in self._by_kind[kind].values() if context in r.auto_priority]
        return [r.name for r in sorted(ranked, key=lambda r: (-r.auto_priority[context], r.name))]

    def resolve(self, kind: PluginKind, name: str) -> type:
        """The class registered as ``name`` for ``kind``; errors list the available names."""
        return self.get(kind, name).load()


@functools.cache
def installed_plugins() -> LoadedPlugins:
    """The installed plugins, loaded once per process."""
    return load_plugins()


@functools.cache
def default_registry() -> Registry:
    """The registry of the installed plugins, built once per process."""
    return Registry.from_plugin_manager(installed_plugins().manager)

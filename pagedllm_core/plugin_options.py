"""Options a plugin implementation takes from ``EngineConfig.plugin_options``.

An implementation that has settings of its own declares them as a :class:`PluginOptions` subclass in
its ``options_class`` attribute and takes the validated object as the ``options`` keyword of its
constructor. The user sets them under the config field that picks the implementation
(``plugin_options={"quantization": {"max_block_rows": 64}}``, ``--plugin-options '{...}'``); they go to
whichever implementation that field ends up choosing, ``auto`` included.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pagedllm_core.config import EngineConfig, format_validation_error
from pagedllm_core.errors import ConfigError
from pagedllm_core.registry import PluginKind


class PluginOptions(BaseModel):
    """The base of an implementation's options: typed fields with defaults; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def raw_options(config: EngineConfig, kind: PluginKind) -> dict[str, Any] | None:
    """What the user set for ``kind``'s implementation; None when nothing."""
    return config.plugin_options.get(kind.config_field)


def parse_options(kind: PluginKind, name: str, implementation: type, raw: dict[str, Any] | None) -> PluginOptions | None:
    """``raw`` validated by ``implementation``'s options class; errors name the setting and what is allowed."""
    declared: type[PluginOptions] | None = getattr(implementation, "options_class", None)
    where = f"plugin_options.{kind.config_field}"
    if declared is None:
        if raw:
            raise ConfigError(f"{where}: {kind.label} {name!r} takes no options (got {sorted(raw)})")
        return None
    try:
        return declared(**(raw or {}))
    except ValidationError as error:
        allowed = ", ".join(declared.model_fields)
        detail = format_validation_error(error).removeprefix("invalid configuration: ")
        raise ConfigError(f"{where} for {kind.label} {name!r}: {detail}; its options are: {allowed}") from None


def instantiate(kind: PluginKind, name: str, implementation: type, config: EngineConfig, *args: Any) -> Any:
    """``implementation(*args)``, given its options from ``config`` when it declares an options class."""
    options = parse_options(kind, name, implementation, raw_options(config, kind))
    return implementation(*args) if options is None else implementation(*args, options=options)


def check_unused_options(config: EngineConfig, kind: PluginKind) -> None:
    """Raise when options were set for ``kind`` but no implementation of it runs (e.g. dense weights)."""
    if raw_options(config, kind):
        raise ConfigError(
            f"plugin_options.{kind.config_field} is set but no {kind.label} runs "
            f"({kind.config_field}={getattr(config, kind.config_field)!r} chose none)"
        )

"""What a request asks its output to match: a JSON schema, any JSON object, a regex or a choice."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pagedllm_core.errors import ConfigError

KINDS = ("json", "json_object", "regex", "choice")


@dataclass
class StructuredOutputsParams:
    """Constrain a request's output; set exactly one field (the names vLLM users know).

    - ``json``: a JSON schema, given as a dict, a JSON string or a pydantic model class; the output
      is one JSON value matching it.
    - ``json_object``: ``True`` for any JSON object.
    - ``regex``: the whole output matches this regular expression (Rust ``regex`` syntax: no
      lookaround or backreferences).
    - ``choice``: the output is exactly one of these strings.

    A pydantic model class or JSON string is turned into a schema dict here, so the params stay plain,
    picklable data.
    """

    json: dict[str, Any] | str | type | None = None
    regex: str | None = None
    choice: list[str] | None = None
    json_object: bool = False

    def __post_init__(self) -> None:
        given = [name for name in KINDS if getattr(self, name) not in (None, False)]
        if len(given) != 1:
            raise ConfigError(
                f"structured_outputs needs exactly one of {', '.join(KINDS)}; got {', '.join(given) or 'none'}"
            )
        if self.json is not None:
            self.json = _schema_dict(self.json)
        if self.regex is not None and not isinstance(self.regex, str):
            raise ConfigError(f"structured_outputs.regex must be a string, got {type(self.regex).__name__}")
        if self.choice is not None:
            if isinstance(self.choice, str) or not all(isinstance(c, str) for c in self.choice) or not self.choice:
                raise ConfigError(f"structured_outputs.choice must be a non-empty list of strings, got {self.choice!r}")
            self.choice = list(self.choice)

    @property
    def kind(self) -> str:
        """The field that is set: ``"json"``, ``"json_object"``, ``"regex"`` or ``"choice"``."""
        return next(name for name in KINDS if getattr(self, name) not in (None, False))

    def cache_key(self) -> str:
        """Equal for equal constraints (the schema's key order does not matter)."""
        return json.dumps([self.kind, getattr(self, self.kind)], sort_keys=True)


def _schema_dict(schema: dict | str | type) -> dict[str, Any]:
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as error:
            raise ConfigError(f"structured_outputs.json is not valid JSON: {error}") from None
    if not isinstance(schema, dict):
        raise ConfigError(
            "structured_outputs.json must be a JSON schema (a dict, a JSON string or a pydantic model class), "
            f"got {type(schema).__name__}"
        )
    return schema

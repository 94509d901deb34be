"""Command-line flags derived from ``EngineConfig``, so the CLI and the Python API never drift apart."""

from __future__ import annotations

import argparse
import json
import types
import typing
from typing import Any, Literal

from pagedllm_core.config import EngineConfig
from pagedllm_core.pooling.config import PoolingConfig


def add_engine_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per config field (booleans get ``--no-...`` too), defaulting to unset."""
    group = parser.add_argument_group("engine")
    for name, field in EngineConfig.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        annotation = _unwrap_optional(field.annotation)
        help_text = f"{field.description} (default: {field.get_default(call_default_factory=True)})"
        if annotation is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(annotation) is Literal:
            group.add_argument(flag, choices=typing.get_args(annotation), default=None, help=help_text)
        elif annotation in (int, float):
            group.add_argument(flag, type=annotation, default=None, help=help_text)
        elif typing.get_origin(annotation) is dict:
            group.add_argument(flag, type=_json_object, metavar="JSON", default=None, help=help_text)
        else:
            group.add_argument(flag, default=None, help=help_text)


def engine_settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the user actually set on the command line."""
    return {
        name: getattr(args, name)
        for name in EngineConfig.model_fields
        if getattr(args, name, None) is not None
    }


def add_pooling_arguments(parser: argparse.ArgumentParser) -> None:
    """``--task`` and ``--override-pooler-config`` (vLLM's flags) for embedding models."""
    group = parser.add_argument_group("embeddings")
    task = PoolingConfig.model_fields["task"]
    group.add_argument("--task", choices=typing.get_args(task.annotation), default="auto", help=task.description)
    group.add_argument(
        "--override-pooler-config",
        default=None,
        metavar="JSON",
        help='pooling of an embedding model, e.g. \'{"pooling_type": "MEAN", "normalize": true}\' (pooling_type '
        "LAST, MEAN or CLS); default: the checkpoint's sentence-transformers config, else CLS for encoders and "
        "LAST for decoders, normalized",
    )


def pooling_config_from_args(args: argparse.Namespace) -> PoolingConfig:
    return PoolingConfig.build(args.task, args.override_pooler_config)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        remaining = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(remaining) == 1:
            return remaining[0]
    return annotation

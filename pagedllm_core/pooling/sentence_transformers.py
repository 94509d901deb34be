"""What a sentence-transformers checkpoint says about pooling: ``modules.json`` and the files it names.

A sentence-transformers model is a pipeline of modules listed in ``modules.json``: the transformer,
then ``Pooling`` (its ``config.json`` names the pooling mode), then optionally ``Normalize``.
``sentence_bert_config.json`` holds the longest input the model was trained for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pagedllm_core.errors import ModelLoadError

_MODULE_PREFIX = "sentence_transformers.models."
# Pooling/config.json flag -> our pooling type.
_POOLING_MODES = {"pooling_mode_cls_token": "CLS", "pooling_mode_mean_tokens": "MEAN", "pooling_mode_lasttoken": "LAST"}
_UNSUPPORTED_MODES = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")


@dataclass(frozen=True)
class SentenceTransformersConfig:
    """The pooling a sentence-transformers checkpoint was trained with."""

    pooling_type: str | None  # "CLS", "MEAN" or "LAST"; None when modules.json has no Pooling module
    normalize: bool
    max_seq_length: int | None


def is_sentence_transformers(directory: Path) -> bool:
    return (directory / "modules.json").is_file()


def read_sentence_transformers_config(directory: Path) -> SentenceTransformersConfig:
    """Read ``modules.json`` and the pooling config it points to; unsupported modules are a ModelLoadError."""
    modules = _read_json(directory / "modules.json")
    pooling_type = None
    normalize = False
    for module in modules:
        kind = module.get("type", "").removeprefix(_MODULE_PREFIX)
        if kind == "Transformer" or kind.endswith(".Transformer"):
            continue
        if kind == "Pooling":
            pooling_type = _pooling_type(_read_json(directory / module.get("path", "") / "config.json"))
        elif kind == "Normalize":
            normalize = True
        else:
            raise ModelLoadError(
                f"sentence-transformers module {module.get('type')!r} ({module.get('path')}) is not supported; "
                "supported: Transformer, Pooling, Normalize"
            )
    bert_config_path = directory / "sentence_bert_config.json"
    max_seq_length = _read_json(bert_config_path).get("max_seq_length") if bert_config_path.is_file() else None
    return SentenceTransformersConfig(pooling_type, normalize, max_seq_length)


def _pooling_type(config: dict) -> str:
    unsupported = [mode for mode in _UNSUPPORTED_MODES if config.get(mode)]
    chosen = [pooling for flag, pooling in _POOLING_MODES.items() if config.get(flag)]
    if unsupported or len(chosen) != 1:
        raise ModelLoadError(
            f"sentence-transformers pooling {sorted(flag for flag, on in config.items() if on is True)} is not "
            f"supported; exactly one of {', '.join(_POOLING_MODES)} is"
        )
    return chosen[0]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"could not read {path}: {error}") from None

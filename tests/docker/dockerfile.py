"""Reading the instructions of the repository's Dockerfiles (no Docker engine needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

DOCKER_DIR = Path(__file__).resolve().parents[2] / "docker"
DOCKERFILES = {"cpu": DOCKER_DIR / "Dockerfile.cpu", "cuda": DOCKER_DIR / "Dockerfile.cuda"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def final_stage(path: Path) -> list[tuple[str, str]]:
    """The instructions of the last ``FROM`` stage: what the image runs with."""
    found = instructions(path)
    last_from = max(index for index, (keyword, _) in enumerate(found) if keyword == "FROM")
    return found[last_from:]


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT / CMD (after any HEALTHCHECK options)."""
    return json.loads(arguments[arguments.index("[") :])

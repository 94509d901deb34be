"""docker/install.sh, the images' install step, run in a fresh venv; then the image's entrypoint and health check.

The CPU variant installs for real (torch from PyTorch's CPU index, pagedllm, plugins, the default model);
the CUDA variant's torch is gigabytes, so for it only the plugin list is checked.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from pagedllm_core.server.process_control import stop_process
from tests.docker.dockerfile import DOCKER_DIR, DOCKERFILES, exec_form, final_stage

REPO_ROOT = DOCKER_DIR.parent
INSTALL_SCRIPT = DOCKER_DIR / "install.sh"


def test_script_parses_and_names_existing_plugins():
    assert subprocess.run(["bash", "-n", str(INSTALL_SCRIPT)]).returncode == 0
    plugin_lists = re.findall(r"plugins=\(([^)]*)\)", INSTALL_SCRIPT.read_text())
    assert len(plugin_lists) == 2
    for plugin in " ".join(plugin_lists).split():
        assert (REPO_ROOT / "plugins" / plugin / "pyproject.toml").is_file(), plugin
    wrong = subprocess.run(["bash", str(INSTALL_SCRIPT), "rocm", "/nonexistent"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown variant 'rocm'" in wrong.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_cpu_install_serves_and_passes_the_health_check(tmp_path):
    venv = tmp_path / "venv"
    environment = {**os.environ, "PYTHON": sys.executable}
    environment.pop("PYTHONPATH", None)
    install = subprocess.run(
        ["bash", str(INSTALL_SCRIPT), "cpu", str(venv), str(REPO_ROOT)],
        capture_output=True, text=True, env=environment, timeout=1500,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert "pagedllm installed with torch 2.13.0+cpu" in install.stdout

    # The image's ENTRYPOINT and HEALTHCHECK as the Dockerfile spells them, run from the venv's bin/.
    stage = {keyword: arguments for keyword, arguments in final_stage(DOCKERFILES["cpu"])}
    entrypoint, health_check = exec_form(stage["ENTRYPOINT"]), exec_form(stage["HEALTHCHECK"])
    port = _free_port()
    runtime = {**environment, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    runtime["PAGEDLLM_HEALTH_URL"] = f"http://127.0.0.1:{port}/health"
    health_check[1] = str(DOCKER_DIR / "healthcheck.py")  # COPY'd to /opt/pagedllm in the image
    log = tmp_path / "server.log"
    # flags after the image name are appended; these keep the test server on loopback and a free port
    server = subprocess.Popen(
        [*entrypoint, "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "512"],
        env=runtime, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        assert subprocess.run(health_check, env=runtime).returncode == 1  # nothing listens yet
        deadline = time.monotonic() + 300
        while subprocess.run(health_check, env=runtime).returncode != 0:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not become healthy:\n" + log.read_text()
            time.sleep(1)
    finally:
        stop_process(server, signal.SIGINT)

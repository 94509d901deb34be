"""One ``pagedllm serve`` on the default model for every client test of the session.

The server is a real subprocess started as a user starts it, with tool calling on
(``--enable-auto-tool-choice --tool-call-parser hermes``), on a free loopback port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model.source import default_model_source
from pagedllm_core.server.process_control import stop_process, wait_until_healthy

MODEL = "SmolLM2-135M-Instruct"
MAX_MODEL_LEN = 2048
START_TIMEOUT_S = 300

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city name", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(__file__).parent in Path(item.fspath).parents:
            item.add_marker(pytest.mark.clients)


@dataclass
class ServedModel:
    base_url: str  # ends in /v1, as clients take it
    model: str = MODEL
    max_model_len: int = MAX_MODEL_LEN


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> ServedModel:
    try:
        default_model_source()
    except ModelLoadError as error:
        pytest.skip(str(error))
    executable = shutil.which("pagedllm", path=str(Path(sys.executable).parent)) or "pagedllm"
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        executable, "serve", "--port", str(port), "--max-model-len", str(MAX_MODEL_LEN),
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--uvicorn-log-level", "warning",
    ]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}", START_TIMEOUT_S, log)
        yield ServedModel(base_url=f"http://127.0.0.1:{port}/v1")
    finally:
        stop_process(process)


"""``pagedllm serve`` for embeddings: the ``--task`` / ``--override-pooler-config`` flags and a real server process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pagedllm_core.entrypoints.engine_args import pooling_config_from_args
from pagedllm_core.errors import ConfigError
from pagedllm_core.server.process_control import stop_process, wait_until_healthy
from tests.server.test_serve_cli import parse


def test_pooling_flags():
    pooling = pooling_config_from_args(parse("--task", "embed", "--override-pooler-config", '{"pooling_type": "MEAN"}'))
    assert pooling.task == "embed" and pooling.override_pooler_config.pooling_type == "MEAN"
    assert pooling.override_pooler_config.normalize is None
    assert pooling_config_from_args(parse()).task == "auto"
    with pytest.raises(ConfigError, match="override_pooler_config: not JSON"):
        pooling_config_from_args(parse("--override-pooler-config", "MEAN"))
    with pytest.raises(ConfigError, match="override_pooler_config.normalize"):
        pooling_config_from_args(parse("--override-pooler-config", '{"normalize": "sometimes"}'))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_embedding_model_offline(tmp_path):
    """The packaged all-MiniLM-L6-v2 served by its Hub id with the Hub switched off, as docs/embeddings.md shows."""
    port = _free_port()
    pagedllm = shutil.which("pagedllm", path=str(Path(sys.executable).parent))
    command = [pagedllm, "serve", "sentence-transformers/all-MiniLM-L6-v2", "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "server.log"
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(process, base_url, 180, log)
        response = httpx.post(
            f"{base_url}/v1/embeddings",
            json={"model": "sentence-transformers/all-MiniLM-L6-v2", "input": ["Hello world", "Bonjour"]},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert [len(item["embedding"]) for item in response.json()["data"]] == [384, 384]
    finally:
        stop_process(process, signal.SIGINT)

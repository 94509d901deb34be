"""``POST /v1/embeddings`` on all-MiniLM-L6-v2: every input form, base64, dimensions, usage and errors."""

from __future__ import annotations

import base64
import json
import os
import re

import httpx
import numpy as np
import openai
import pytest

from pagedllm_core.config import EngineConfig
from pagedllm_core.model.source import packaged_model_directory
from pagedllm_core.pooling.async_engine import AsyncEmbeddingEngine
from pagedllm_core.pooling.config import PoolingConfig
from pagedllm_core.server.app import build_app
from pagedllm_core.server.background import BackgroundServer
from pagedllm_core.server.settings import ServerSettings
from tests.server.conftest import EMBEDDING_MODEL_NAME, LIMITS

TEXTS = ["The cat sits on the mat.", "A feline rests on a rug.", "Stock prices fell sharply today."]


@pytest.fixture
def http(embedding_server):
    with httpx.Client(base_url=embedding_server.base_url, timeout=60) as http:
        yield http


def embed(http, **body) -> httpx.Response:
    return http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL_NAME, **body})


def test_every_input_form_gives_the_same_embeddings(http, embedding_engine):
    token_ids = [embedding_engine.tokenizer.encode(text) for text in TEXTS]
    by_texts = embed(http, input=TEXTS).json()
    by_token_lists = embed(http, input=token_ids).json()
    one_text = embed(http, input=TEXTS[0]).json()
    one_token_list = embed(http, input=token_ids[0]).json()

    assert by_texts["object"] == "list" and by_texts["model"] == EMBEDDING_MODEL_NAME
    assert [item["index"] for item in by_texts["data"]] == [0, 1, 2]
    assert by_texts["usage"] == {"prompt_tokens": sum(map(len, token_ids)), "total_tokens": sum(map(len, token_ids))}
    assert by_token_lists["data"] == by_texts["data"]
    assert one_text["data"][0]["embedding"] == one_token_list["data"][0]["embedding"] == by_texts["data"][0]["embedding"]
    vectors = np.array([item["embedding"] for item in by_texts["data"]])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # the paraphrase is closer than the unrelated sentence
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_base64_is_little_endian_float32(http):
    as_floats = embed(http, input=TEXTS[0]).json()["data"][0]["embedding"]
    encoded = embed(http, input=TEXTS[0], encoding_format="base64").json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert np.array_equal(decoded, np.asarray(as_floats, dtype=np.float32))


def test_openai_client_embeddings_create(embedding_server, http):
    client = openai.OpenAI(base_url=f"{embedding_server.base_url}/v1", api_key="unused", max_retries=0)
    # the client asks for base64 unless told otherwise, and decodes it
    result = client.embeddings.create(model=EMBEDDING_MODEL_NAME, input=TEXTS)
    floats = embed(http, input=TEXTS).json()["data"]
    assert np.allclose([item.embedding for item in result.data], [item["embedding"] for item in floats], atol=1e-7)
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0
    with pytest.raises(openai.BadRequestError, match="not a Matryoshka model"):
        client.embeddings.create(model=EMBEDDING_MODEL_NAME, input="hi", dimensions=64)


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"input": ""}, "input", "must not be empty"),
        ({"input": []}, "input", "must not be empty"),
        ({"input": ["ok", ""]}, "input", "must not be empty"),
        ({"input": [[101, 102], []]}, "input", "must not be empty"),
        ({"input": ["x"] * 2049}, "input", "at most 2048 inputs"),
        ({"input": [101, 99999, 102]}, "input", "token ids must be in \\[0, 30522\\)"),
        ({"input": "hi", "dimensions": 64}, "dimensions", "not a Matryoshka model"),
        ({"input": "hi", "dimensions": 0}, "dimensions", "greater than or equal to 1"),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
        ({"input": "hi", "model": "other"}, "model", "does not exist"),
    ],
)
def test_bad_requests_get_openai_errors(http, body, param, message):
    response = embed(http, **body)
    error = response.json()["error"]
    assert response.status_code == (404 if param == "model" else 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert re.search(message, error["message"])


def test_too_long_input_is_a_context_length_error(http):
    response = embed(http, input=["short", "word " * 300])
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["message"].startswith("input 1: This model's maximum context length is 256 tokens. However, you requested 302")
    truncated = embed(http, input="word " * 300, truncate_prompt_tokens=10).json()
    assert truncated["usage"]["prompt_tokens"] == 10


def test_generation_routes_answer_400_on_an_embedding_server(http):
    response = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_task"
    assert http.get("/health").status_code == 200
    assert http.get("/v1/models").json()["data"][0]["max_model_len"] == 256


def test_embeddings_answer_400_on_a_generation_server(server):
    response = httpx.post(f"{server.base_url}/v1/embeddings", json={"input": "hi"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "unsupported_task"
    assert "needs task 'embed'" in error["message"]


@pytest.fixture(scope="module")
def matryoshka_server(tmp_path_factory):
    """all-MiniLM-L6-v2 with a config declaring Matryoshka sizes (vLLM's ``matryoshka_dimensions``)."""
    source = packaged_model_directory("sentence-transformers/all-MiniLM-L6-v2")
    directory = tmp_path_factory.mktemp("matryoshka")
    for entry in source.iterdir():
        if entry.name != "config.json":
            os.symlink(entry, directory / entry.name)
    config = json.loads((source / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [64, 128]}))
    engine = AsyncEmbeddingEngine.from_config(EngineConfig(model=str(directory)), PoolingConfig.build())
    settings = ServerSettings(served_model_names=["m"], model_source=str(directory), limits=LIMITS, task="embed")
    with BackgroundServer(build_app(engine, settings)) as server:
        yield server


def test_dimensions_on_a_matryoshka_model(matryoshka_server):
    with httpx.Client(base_url=matryoshka_server.base_url, timeout=60) as http:
        full = np.array(embed(http, model="m", input=TEXTS[0]).json()["data"][0]["embedding"])
        cut = np.array(embed(http, model="m", input=TEXTS[0], dimensions=64).json()["data"][0]["embedding"])
        refused = embed(http, model="m", input=TEXTS[0], dimensions=100)
    assert cut.shape == (64,) and np.isclose(np.linalg.norm(cut), 1)
    assert np.allclose(cut, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)
    assert refused.status_code == 400 and "this model allows [64, 128]" in refused.json()["error"]["message"]


def test_concurrent_requests_get_their_own_answers(http, embedding_engine):
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"request number {index} about {'rivers ' * index}" for index in range(12)]
    alone = [embed(http, input=text).json()["data"][0]["embedding"] for text in texts]
    with ThreadPoolExecutor(max_workers=12) as pool:
        together = list(pool.map(lambda text: embed(http, input=text).json()["data"][0]["embedding"], texts))
    assert np.allclose(together, alone, atol=1e-5)
    stats = embedding_engine.stats()
    assert stats.num_running_requests == stats.num_waiting_requests == 0

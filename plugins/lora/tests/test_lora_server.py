"""LoRA adapters on the OpenAI server: --lora-modules, ``model`` picking the adapter, run-time load/unload."""

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("peft")

from peft_adapters import ALL_TARGETS, make_peft_adapter  # noqa: E402

from pagedllm_core import LLM, ConfigError, LoRARequest, SamplingParams  # noqa: E402
from pagedllm_core.config import EngineConfig  # noqa: E402
from pagedllm_core.engine.async_engine import AsyncLLMEngine  # noqa: E402
from pagedllm_core.server.app import build_app  # noqa: E402
from pagedllm_core.server.background import BackgroundServer  # noqa: E402
from pagedllm_core.server.cli import (  # noqa: E402
    add_serve_arguments,
    engine_config_from_serve_args,
    server_settings_from_args,
)
from pagedllm_core.server.lora_modules import LoRAModulePath, parse_lora_module  # noqa: E402
from pagedllm_core.server.settings import ServerSettings  # noqa: E402
from pagedllm_core.testing import build_tiny_model  # noqa: E402

API_KEY = "sk-lora"
PROMPT = "Once upon a time there was"
MAX_TOKENS = 10
ENGINE = dict(dtype="float32", enable_lora=True, max_loras=2, max_lora_rank=8, num_kv_blocks=256, max_model_len=128)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    model_dir = build_tiny_model(tmp_path_factory.mktemp("model"), "LlamaForCausalLM")
    paths = {
        name: make_peft_adapter(model_dir, tmp_path_factory.mktemp(name), rank, 2 * rank, ALL_TARGETS, seed=seed)
        for seed, (name, rank) in enumerate([("sql-lora", 8), ("chat-lora", 4), ("late-lora", 8)])
    }
    return model_dir, paths


@pytest.fixture(scope="module")
def expected(adapters):
    """Each name's greedy completion of PROMPT from the offline API."""
    model_dir, paths = adapters
    llm = LLM(model=str(model_dir), **ENGINE)
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    requests = {"base": None, **{name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(paths.items())}}
    return {name: llm.generate([PROMPT], params, use_tqdm=False, lora_request=lora)[0].outputs[0].text
            for name, lora in requests.items()}


@pytest.fixture(scope="module")
def server(adapters):
    model_dir, paths = adapters
    engine = AsyncLLMEngine.from_config(EngineConfig(model=str(model_dir), **ENGINE))
    settings = ServerSettings(
        served_model_names=["base"], model_source=str(model_dir), api_key=API_KEY,
        lora_modules=[LoRAModulePath(name=name, path=paths[name]) for name in ("sql-lora", "chat-lora")],
        allow_runtime_lora_updating=True,
    )
    with BackgroundServer(build_app(engine, settings)) as background:
        yield background, engine


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server[0].base_url, timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        yield http


def complete(http, model, **extra):
    body = {"model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True, **extra}
    return http.post("/v1/completions", json=body)


def wait_until_idle(engine, timeout=10.0):
    deadline = time.monotonic() + timeout
    while (stats := engine.stats()).num_used_blocks or stats.num_running_requests or stats.num_waiting_requests:
        assert time.monotonic() < deadline, f"requests or KV blocks left behind: {stats}"
        time.sleep(0.02)


def test_models_lists_adapters_with_their_parent(http):
    cards = {card["id"]: card for card in http.get("/v1/models").json()["data"]}
    assert set(cards) == {"base", "sql-lora", "chat-lora"}
    assert cards["sql-lora"]["parent"] == "base" and cards["base"]["parent"] is None
    assert http.get("/v1/models/chat-lora").json()["parent"] == "base"


def test_32_concurrent_requests_each_get_their_own_adapter(http, server, expected):
    models = ["base", "sql-lora", "chat-lora", "sql-lora"] * 8
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda model: complete(http, model), models))
    for model, response in zip(models, responses):
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == expected[model], model
        assert response.json()["model"] == model
    messages = [{"role": "user", "content": "hi"}]
    chat = http.post("/v1/chat/completions", json={"model": "chat-lora", "messages": messages, "max_tokens": 3})
    assert chat.status_code == 200 and chat.json()["model"] == "chat-lora"
    wait_until_idle(server[1])


def test_unknown_adapter_name_is_a_404_and_the_server_stays_up(http):
    response = complete(http, "no-such-lora")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and "sql-lora" in error["message"]
    assert complete(http, "base").status_code == 200


def test_runtime_load_and_unload_need_the_key_and_check_the_adapter(http, server, adapters, expected):
    _, paths = adapters
    base_url = server[0].base_url
    assert httpx.post(f"{base_url}/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/x"}).status_code == 401
    bad = http.post("/v1/load_lora_adapter", json={"lora_name": "bad", "lora_path": "/no/such/dir"})
    assert bad.status_code == 400 and "is not a directory" in bad.json()["error"]["message"]
    taken = http.post("/v1/load_lora_adapter", json={"lora_name": "sql-lora", "lora_path": paths["late-lora"]})
    assert taken.status_code == 400 and "already served" in taken.json()["error"]["message"]

    loaded = http.post("/v1/load_lora_adapter", json={"lora_name": "late-lora", "lora_path": paths["late-lora"]})
    assert loaded.status_code == 200, loaded.text
    assert complete(http, "late-lora").json()["choices"][0]["text"] == expected["late-lora"]

    missing = http.post("/v1/unload_lora_adapter", json={"lora_name": "never-loaded"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert http.post("/v1/unload_lora_adapter", json={"lora_name": "late-lora"}).status_code == 200
    assert complete(http, "late-lora").status_code == 404
    wait_until_idle(server[1])


def test_unloading_while_requests_stream(http, server, expected):
    """Requests running with an adapter finish with it when it is unloaded under them; no blocks leak."""
    texts = []

    def stream_one():
        body = {"model": "chat-lora", "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0,
                "ignore_eos": True, "stream": True}
        text = ""
        with http.stream("POST", "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    text += json.loads(line[6:])["choices"][0]["text"]
        texts.append(text)

    threads = [threading.Thread(target=stream_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert http.post("/v1/unload_lora_adapter", json={"lora_name": "chat-lora"}).status_code == 200
    for thread in threads:
        thread.join(60)
    # Each stream either ran with the adapter or was refused (404) after the unload; never with another's weights.
    assert all(text in (expected["chat-lora"], "") for text in texts), (texts, expected["chat-lora"])
    assert complete(http, "chat-lora").status_code == 404
    wait_until_idle(server[1])


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_serve_flags(monkeypatch):
    monkeypatch.delenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", raising=False)
    monkeypatch.delenv("PAGEDLLM_ALLOW_RUNTIME_LORA_UPDATING", raising=False)
    args = parse("m", "--enable-lora", "--max-lora-rank", "8", "--max-loras", "2", "--max-cpu-loras", "4",
                 "--lora-modules", "sql-lora=/a", '{"name": "b", "path": "/b", "base_model_name": "m"}')
    config = engine_config_from_serve_args(args)
    assert (config.enable_lora, config.max_lora_rank, config.max_loras, config.max_cpu_loras) == (True, 8, 2, 4)
    settings = server_settings_from_args(args, config)
    assert settings.lora_modules == [LoRAModulePath(name="sql-lora", path="/a"),
                                     LoRAModulePath(name="b", path="/b", base_model_name="m")]
    assert not settings.allow_runtime_lora_updating
    monkeypatch.setenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
    assert server_settings_from_args(args, config).allow_runtime_lora_updating
    with pytest.raises(ConfigError, match="need --enable-lora"):
        plain = parse("m", "--lora-modules", "a=/a")
        server_settings_from_args(plain, engine_config_from_serve_args(plain))
    for bad in ("no-equals-sign", '{"name": "x"}', "{not json"):
        with pytest.raises(ConfigError, match="--lora-modules"):
            parse_lora_module(bad)

"""/v1/models, /health, /version, /metrics, /tokenize and /detokenize."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import ALIAS, MODEL_NAME


def test_models(client, tiny_model):
    models = client.models.list().data
    assert [model.id for model in models] == [MODEL_NAME, ALIAS]
    assert all(model.object == "model" and model.owned_by == "pagedllm" for model in models)
    assert models[0].model_extra["root"] == str(tiny_model)
    assert models[0].model_extra["max_model_len"] == 256
    assert client.models.retrieve(ALIAS).id == ALIAS


def test_health_and_version(http):
    assert http.get("/health").status_code == 200
    assert http.get("/version").json()["version"]


def test_metrics(client, http):
    client.completions.create(model=MODEL_NAME, prompt="Hello", max_tokens=4, extra_body={"ignore_eos": True})
    response = http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels or "le" not in sample.labels
    }
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_used_blocks", "kv_cache_usage_perc"):
        assert f"pagedllm:{name}" in samples
    assert samples["pagedllm:kv_cache_total_blocks"] == 256
    assert samples["pagedllm:prompt_tokens_total"] >= 2
    assert samples["pagedllm:generation_tokens_total"] >= 4
    assert samples["pagedllm:time_to_first_token_seconds_count"] >= 1
    assert samples["pagedllm:inter_token_latency_seconds_count"] >= 3
    assert samples["pagedllm:engine_healthy"] == 1
    assert samples["pagedllm:prefix_cache_queries_total"] >= 2
    assert 0 <= samples["pagedllm:prefix_cache_hits_total"] <= samples["pagedllm:prefix_cache_queries_total"]
    for name in ("spec_decode_num_drafts", "spec_decode_num_draft_tokens", "spec_decode_num_accepted_tokens"):
        assert samples[f"pagedllm:{name}_total"] == 0  # this server does not speculate


def test_tokenize_round_trip(http):
    tokens = http.post("/tokenize", json={"model": MODEL_NAME, "prompt": "Hello world"}).json()
    assert tokens["count"] == len(tokens["tokens"]) and tokens["max_model_len"] == 256
    assert http.post("/detokenize", json={"tokens": tokens["tokens"]}).json() == {"prompt": "Hello world"}


def test_tokenize_messages_uses_the_chat_template(http):
    messages = [{"role": "user", "content": "Hello"}]
    with_header = http.post("/tokenize", json={"messages": messages}).json()
    without = http.post("/tokenize", json={"messages": messages, "add_generation_prompt": False}).json()
    assert with_header["count"] > without["count"]
    text = http.post("/detokenize", json={"tokens": with_header["tokens"]}).json()["prompt"]
    assert "Hello" in text and text.endswith("assistant\n")


def test_tokenizer_route_errors(http):
    assert http.post("/tokenize", json={}).status_code == 400
    assert http.post("/tokenize", json={"prompt": "x", "messages": []}).status_code == 400
    assert http.post("/detokenize", json={"tokens": [10**7]}).status_code == 400
    assert http.post("/tokenize", json={"model": "nope", "prompt": "x"}).status_code == 404

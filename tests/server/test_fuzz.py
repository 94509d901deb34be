"""A property-based fuzz of the HTTP API with schemathesis, against the server's own OpenAPI schema.

Bounded in examples per operation (and Hypothesis' deadline is off: some requests generate), so it
fits in a CI run; what it asserts is that no input gets a 5xx and the engine is healthy at the end.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from pagedllm_core.server.app import build_app
from pagedllm_core.server.background import BackgroundServer
from tests.server.conftest import settings as server_settings
from tests.server.conftest import wait_until_idle

MAX_EXAMPLES = 40  # per operation and generation mode


@pytest.fixture(scope="module")
def fuzzed_server(engine, tiny_model):
    app = build_app(engine, server_settings(tiny_model, enable_api_docs=True), shutdown_engine=False)
    with BackgroundServer(app) as server:
        yield server


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_gets_a_server_error(fuzzed_server, mode):
    """Valid inputs (positive) and inputs that break the schema (negative) all get answers below 500."""
    api_schema = schemathesis.openapi.from_url(f"{fuzzed_server.base_url}/openapi.json")
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert any(operation.path == "/v1/chat/completions" for operation in operations)
    fuzzed = []
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def answers_below_500(case):
            response = case.call(base_url=fuzzed_server.base_url, timeout=60)
            assert response.status_code < 500, f"{case.method} {case.formatted_path} {case.body!r}: {response.text}"

        try:
            answers_below_500()
        except Unsatisfiable:
            assert mode == "negative"  # an operation that takes no input, or any string, cannot be given a bad one
        else:
            fuzzed.append(operation.path)
    assert {"/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"} <= set(fuzzed)


def test_the_engine_is_healthy_after_the_fuzz(fuzzed_server, engine):
    wait_until_idle(engine, timeout=60)
    assert engine.is_running
    assert httpx.get(f"{fuzzed_server.base_url}/health").status_code == 200
    body = {"prompt": "Hello", "max_tokens": 3}
    assert httpx.post(f"{fuzzed_server.base_url}/v1/completions", json=body, timeout=60).status_code == 200

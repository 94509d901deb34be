"""litellm against ``pagedllm serve`` with the ``hosted_vllm/`` prefix: chat, tools, context-window errors."""

from __future__ import annotations

import json
import os

import jsonschema
import pytest

from tests.clients.conftest import WEATHER_TOOL

# litellm would fetch its model price list from GitHub when imported; CI has no internet.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_completion_and_stream(served):
    model = f"hosted_vllm/{served.model}"
    response = litellm.completion(
        model=model, api_base=served.base_url, messages=QUESTION, max_tokens=24, temperature=0
    )
    assert "Paris" in response.choices[0].message.content
    chunks = litellm.completion(
        model=model, api_base=served.base_url, messages=QUESTION, max_tokens=24, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == response.choices[0].message.content


def test_forced_tool_call(served):
    response = litellm.completion(
        model=f"hosted_vllm/{served.model}",
        api_base=served.base_url,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=100,
        temperature=0,
    )
    (call,) = response.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])


def test_context_window_exceeded_is_recognised(served):
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.completion(
            model=f"hosted_vllm/{served.model}", api_base=served.base_url,
            messages=[{"role": "user", "content": "hi " * 3000}],
        )


def test_router_falls_back_on_context_window_errors(served):
    """A deployment asking for more tokens than the context holds falls back to one that fits."""
    deployment = {"model": f"hosted_vllm/{served.model}", "api_base": served.base_url, "temperature": 0}
    router = litellm.Router(
        model_list=[
            {"model_name": "long-answers", "litellm_params": {**deployment, "max_tokens": served.max_model_len}},
            {"model_name": "short-answers", "litellm_params": {**deployment, "max_tokens": 24}},
        ],
        context_window_fallbacks=[{"long-answers": ["short-answers"]}],
        num_retries=0,
    )
    response = router.completion(model="long-answers", messages=QUESTION)
    assert "Paris" in response.choices[0].message.content
    assert response.usage.completion_tokens <= 24

"""Request models and their conversion to SamplingParams, without a server."""

from __future__ import annotations

import dataclasses

import pytest

from pagedllm_core.sampling_params import SamplingParams
from pagedllm_core.server.errors import InvalidRequestError
from pagedllm_core.server.protocol import SAMPLING_FIELDS, ChatCompletionRequest, CompletionRequest
from pagedllm_core.server.settings import ServerLimits

LIMITS = ServerLimits()


def test_every_sampling_field_exists_in_sampling_params():
    names = {field.name for field in dataclasses.fields(SamplingParams)}
    assert set(SAMPLING_FIELDS) <= names


def test_unset_fields_keep_sampling_params_defaults():
    params = CompletionRequest(prompt="x").to_sampling_params(LIMITS)
    assert params == SamplingParams(max_tokens=16)
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}]).to_sampling_params(LIMITS)
    assert chat.max_tokens is None and chat.temperature == SamplingParams().temperature


def test_fields_map_through():
    request = CompletionRequest(
        prompt="x", n=2, best_of=3, temperature=0.5, top_p=0.9, top_k=5, min_p=0.1, seed=4, stop=["a"],
        stop_token_ids=[7], presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=1.1,
        logit_bias={"3": 1.5}, min_tokens=2, ignore_eos=True, max_tokens=9, logprobs=2,
        include_stop_str_in_output=True, skip_special_tokens=False,
    )
    params = request.to_sampling_params(LIMITS)
    assert (params.n, params.best_of, params.temperature, params.top_p, params.top_k) == (2, 3, 0.5, 0.9, 5)
    assert (params.min_p, params.seed, params.stop, params.stop_token_ids) == (0.1, 4, ["a"], [7])
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (0.5, 0.25, 1.1)
    assert params.logit_bias == {3: 1.5} and (params.min_tokens, params.max_tokens, params.logprobs) == (2, 9, 2)
    assert params.ignore_eos and params.include_stop_str_in_output and not params.skip_special_tokens


def test_cache_salt_reaches_sampling_params_on_both_endpoints_and_must_not_be_empty():
    assert CompletionRequest(prompt="x", cache_salt="tenant-a").to_sampling_params(LIMITS).cache_salt == "tenant-a"
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], cache_salt="tenant-b")
    assert chat.to_sampling_params(LIMITS).cache_salt == "tenant-b"
    with pytest.raises(ValueError, match="cache_salt"):
        CompletionRequest(prompt="x", cache_salt="")


@pytest.mark.parametrize(
    "values, logprobs",
    [({}, None), ({"logprobs": True}, 0), ({"logprobs": True, "top_logprobs": 3}, 3)],
)
def test_chat_logprobs(values, logprobs):
    request = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], **values)
    assert request.to_sampling_params(LIMITS).logprobs == logprobs


def test_limits():
    limits = ServerLimits(max_n=2, max_logprobs=1)
    with pytest.raises(InvalidRequestError, match="n must be at most 2"):
        CompletionRequest(prompt="x", n=3).to_sampling_params(limits)
    with pytest.raises(InvalidRequestError, match="at most 1 logprobs"):
        CompletionRequest(prompt="x", logprobs=2).to_sampling_params(limits)


def test_unknown_fields_are_ignored():
    request = CompletionRequest(prompt="x", store=True, metadata={"a": "b"})
    assert request.to_sampling_params(LIMITS) == SamplingParams(max_tokens=16)

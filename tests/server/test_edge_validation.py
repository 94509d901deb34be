"""Every number a request carries is checked at the edge: out-of-range values get a 400, the engine lives on."""

from __future__ import annotations

import math

import pytest

from pagedllm_core.errors import ConfigError
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams

POISON = {"prompt": "hi", "max_tokens": 4, "top_k": 9223372036854775808}


def test_the_poison_request_gets_a_400_and_the_engine_serves_on(http, engine):
    response = http.post("/v1/completions", json=POISON)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "top_k"
    assert engine.is_running
    later = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 4, "top_k": 2**63 - 1})
    assert later.status_code == 200 and later.json()["choices"][0]["finish_reason"] == "length"
    assert http.get("/health").status_code == 200


OUT_OF_RANGE = [
    ("top_k", 2**63), ("top_k", -2), ("seed", -1), ("seed", 2**63), ("min_tokens", 2**64),
    ("max_tokens", 2**64), ("n", 2**64), ("logprobs", 2**70), ("best_of", 2**64),
    ("repetition_penalty", 1e-40), ("repetition_penalty", 1e30), ("repetition_penalty", 0),
    ("length_penalty", 1e6), ("length_penalty", -1e6), ("stop_token_ids", [2**64]), ("stop_token_ids", [-1]),
    ("logit_bias", {"5": 1e308}), ("logit_bias", {str(2**64): 1}), ("prompt", [2**63]), ("prompt", [[1, -5]]),
    ("temperature", 1e300), ("presence_penalty", -1e300),
]


@pytest.mark.parametrize("field, value", OUT_OF_RANGE)
def test_out_of_range_numbers_get_a_400_naming_the_field(http, engine, field, value):
    body = {"prompt": "hi", "max_tokens": 4, field: value}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["message"]
    assert engine.is_running


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400"])
@pytest.mark.parametrize("field", ["repetition_penalty", "length_penalty", "temperature", "top_p", "min_p"])
def test_non_finite_floats_get_a_400(http, engine, field, literal):
    content = f'{{"prompt": "hi", "max_tokens": 2, "{field}": {literal}}}'
    response = http.post("/v1/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert engine.is_running


def test_the_engine_still_answers_after_a_burst_of_bad_requests(http, engine):
    for field, value in OUT_OF_RANGE:
        http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, field: value})
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert http.post("/v1/chat/completions", json=chat).status_code == 200


@pytest.mark.parametrize(
    "values, message",
    [
        ({"top_k": 2**63}, "top_k must fit in a signed 64-bit integer"),
        ({"seed": 2**64}, "seed must fit in a signed 64-bit integer"),
        ({"repetition_penalty": math.inf}, "repetition_penalty must be a finite number"),
        ({"repetition_penalty": 1e-9}, r"repetition_penalty must be in \[0.01, 100\]"),
        ({"temperature": math.nan}, "temperature must be a finite number"),
        ({"logit_bias": {1: math.inf}}, "logit_bias values must be a finite number"),
        ({"stop_token_ids": [2**63]}, "stop_token_ids must fit"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"max_tokens": True}, "max_tokens must be an integer"),
    ],
)
def test_sampling_params_refuse_what_the_engine_cannot_represent(values, message):
    with pytest.raises(ConfigError, match=message):
        SamplingParams(**values)


def test_sampling_params_accept_the_edges():
    params = SamplingParams(top_k=2**63 - 1, seed=2**63 - 1, repetition_penalty=100.0, logit_bias={3: -100.0})
    assert params.top_k == 2**63 - 1


@pytest.mark.parametrize(
    "values, message",
    [
        ({"length_penalty": 1e6}, r"length_penalty must be in \[-10, 10\]"),
        ({"length_penalty": math.nan}, "length_penalty must be a finite number"),
        ({"temperature": math.inf}, "temperature must be a finite number"),
        ({"beam_width": 2**64}, "beam_width must fit"),
    ],
)
def test_beam_search_params_refuse_unrepresentable_values(values, message):
    with pytest.raises(ConfigError, match=message):
        BeamSearchParams(**{"beam_width": 2, "max_tokens": 4, **values})

"""``speculative_config``: vLLM's keys as a dict or JSON, and errors that say what is allowed."""

import argparse

import pytest

from pagedllm_core.config import EngineConfig
from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args
from pagedllm_core.errors import ConfigError
from pagedllm_core.spec_decode.config import SpeculativeConfig


def test_the_command_line_flag_takes_json():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(
        ["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3}']
    )
    config = EngineConfig.build(**engine_settings_from_args(args))
    assert config.speculative_config == SpeculativeConfig(method="ngram", num_speculative_tokens=4, prompt_lookup_max=3)
    assert config.speculative_config.lookup_range == (2, 3)


def test_a_dict_works_as_in_vllm():
    config = EngineConfig.build(
        speculative_config={"method": "draft_model", "model": "/models/draft", "num_speculative_tokens": 3}
    )
    assert config.speculative_config.uses_draft_model
    assert EngineConfig.build().speculative_config is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"method": "eagle", "num_speculative_tokens": 4},
            "speculative_config.method: Input should be 'ngram' or 'draft_model'",
        ),
        ({"method": "ngram"}, "speculative_config.num_speculative_tokens: Field required"),
        ({"method": "ngram", "num_speculative_tokens": 0}, "greater than or equal to 1"),
        (
            {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 4, "prompt_lookup_max": 2},
            "must not exceed",
        ),
        ({"method": "ngram", "num_speculative_tokens": 2, "model": "x"}, "belong to 'draft_model'"),
        ({"method": "draft_model", "num_speculative_tokens": 2}, "needs a draft model, or a quantization"),
        (
            {"method": "ngram", "num_speculative_tokens": 2, "lookahead": 1},
            "speculative_config.lookahead: unknown setting",
        ),
        ("{not json", "must be a JSON object"),
    ],
)
def test_bad_settings_name_what_is_allowed(value, message):
    with pytest.raises(ConfigError, match="invalid configuration") as error:
        EngineConfig.build(speculative_config=value)
    assert message in str(error.value)


def test_a_draft_with_another_vocabulary_is_refused(tiny_model_dir):
    from pagedllm_core import LLM

    target = tiny_model_dir("LlamaForCausalLM")
    draft = tiny_model_dir("LlamaForCausalLM", vocab_size=600)
    with pytest.raises(ConfigError, match="vocabulary"):
        LLM(
            model=str(target),
            speculative_config={"method": "draft_model", "model": str(draft), "num_speculative_tokens": 2},
        )

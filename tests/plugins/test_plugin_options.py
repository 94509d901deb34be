"""``plugin_options``: each implementation picked by config gets its own validated options."""

from __future__ import annotations

import argparse

import pytest
from pydantic import Field

from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend
from pagedllm_core.engine.llm_engine import LLMEngine
from pagedllm_core.entrypoints.engine_args import add_engine_arguments, engine_settings_from_args
from pagedllm_core.errors import ConfigError
from pagedllm_core.hookspecs import hookimpl
from pagedllm_core.plugin_options import PluginOptions
from pagedllm_core.plugins import load_plugins
from pagedllm_core.registry import Registry
from pagedllm_core.sampling_params import SamplingParams


class WindowOptions(PluginOptions):
    num_splits: int = Field(1, ge=1)
    label: str = "plain"


class TunableAttentionBackend(TorchAttentionBackend):
    """A third-party backend with options of its own."""

    options_class = WindowOptions

    def __init__(self, spec, options: WindowOptions):
        super().__init__(spec)
        self.options = options


class TunablePlugin:
    @hookimpl
    def register_attention_backends(self, register):
        register("tunable", TunableAttentionBackend, "a backend with options")


@pytest.fixture
def registry():
    loaded = load_plugins()
    loaded.manager.register(TunablePlugin(), name="tunable_plugin")
    return Registry.from_plugin_manager(loaded.manager)


def engine(tiny_model_dir, registry, **settings) -> LLMEngine:
    config = EngineConfig.build(model=str(tiny_model_dir()), dtype="float32", num_kv_blocks=64, **settings)
    return LLMEngine(config, registry)


def backend_of(llm_engine: LLMEngine):
    return llm_engine.executor.worker.model_runner.attention


def test_the_chosen_backend_gets_its_options_validated_and_defaults_fill_the_rest(tiny_model_dir, registry):
    llm_engine = engine(
        tiny_model_dir, registry, attention_backend="tunable", plugin_options={"attention_backend": {"num_splits": "3"}}
    )
    assert backend_of(llm_engine).options == WindowOptions(num_splits=3, label="plain")
    llm_engine.add_request("r", [1, 2, 3], SamplingParams(max_tokens=2))
    while llm_engine.has_unfinished_requests():
        llm_engine.step()


def test_an_implementation_with_options_gets_its_defaults_when_none_are_set(tiny_model_dir, registry):
    assert backend_of(engine(tiny_model_dir, registry, attention_backend="tunable")).options == WindowOptions()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"attention_backend": "tunable", "plugin_options": {"attention_backend": {"num_splits": 0}}},
            r"plugin_options.attention_backend for attention backend 'tunable': num_splits: Input should be greater "
            r"than or equal to 1 \(got 0\); its options are: num_splits, label",
        ),
        (
            {"attention_backend": "tunable", "plugin_options": {"attention_backend": {"splits": 2}}},
            "splits: unknown setting",
        ),
        (
            {"attention_backend": "torch", "plugin_options": {"attention_backend": {"num_splits": 2}}},
            r"attention backend 'torch' takes no options \(got \['num_splits'\]\)",
        ),
        (
            {"plugin_options": {"scheduler": {"policy": "fcfs"}}},
            "scheduler 'default' takes no options",
        ),
    ],
)
def test_bad_options_are_errors_that_say_what_is_allowed(tiny_model_dir, registry, settings, message):
    with pytest.raises(ConfigError, match=message):
        engine(tiny_model_dir, registry, **settings)


def test_options_for_a_setting_that_picks_no_plugin_are_a_config_error():
    with pytest.raises(ConfigError, match=r"plugin_options.*lora_manager.*'attention_backend', 'quantization'"):
        EngineConfig.build(plugin_options={"lora_manager": {"x": 1}})


def test_the_command_line_takes_plugin_options_as_json():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(["--plugin-options", '{"quantization": {"max_block_rows": 64}}'])
    assert engine_settings_from_args(args)["plugin_options"] == {"quantization": {"max_block_rows": 64}}
    for bad in ("{not json", "[1, 2]"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--plugin-options", bad])

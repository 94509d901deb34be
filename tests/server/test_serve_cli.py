"""The ``serve`` flags and the settings they produce."""

from __future__ import annotations

import argparse

import pytest

from pagedllm_core.errors import ConfigError
from pagedllm_core.server.cli import (
    DEFAULT_MODEL_NAME,
    add_serve_arguments,
    engine_config_from_serve_args,
    server_settings_from_args,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults():
    args = parse()
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    config = engine_config_from_serve_args(args)
    settings = server_settings_from_args(args, config)
    assert config.model is None and settings.served_model_names == [DEFAULT_MODEL_NAME]
    assert settings.api_key is None and settings.limits.request_timeout == 600


def test_model_positional_or_flag():
    assert engine_config_from_serve_args(parse("some/model")).model == "some/model"
    assert engine_config_from_serve_args(parse("--model", "some/model")).model == "some/model"
    with pytest.raises(ConfigError, match="disagree"):
        engine_config_from_serve_args(parse("a/model", "--model", "b/model"))


def test_server_and_engine_flags(tmp_path, monkeypatch):
    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    args = parse(
        "m", "--served-model-name", "first", "second", "--api-key", "k", "--chat-template", str(template),
        "--max-request-body-size", "1MiB", "--max-n", "3", "--max-logprobs", "7", "--request-timeout", "0",
        "--max-model-len", "128", "--block-size", "8", "--port", "9000",
    )
    config = engine_config_from_serve_args(args)
    settings = server_settings_from_args(args, config)
    assert (config.max_model_len, config.block_size, args.port) == (128, 8, 9000)
    assert settings.served_model_names == ["first", "second"] and settings.api_key == "k"
    assert settings.chat_template == template.read_text()
    limits = settings.limits
    assert (limits.max_request_body_bytes, limits.max_n, limits.max_logprobs) == (1 << 20, 3, 7)
    assert limits.request_timeout is None


def test_tool_calling_flags():
    args = parse("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
    settings = server_settings_from_args(args, engine_config_from_serve_args(args))
    assert settings.enable_auto_tool_choice and settings.tool_call_parser == "hermes"
    with pytest.raises(SystemExit):
        parse("--tool-call-parser", "qwen")


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("PAGEDLLM_API_KEY", "from-env")
    args = parse()
    assert server_settings_from_args(args, engine_config_from_serve_args(args)).api_key == "from-env"


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--chat-template", "/no/such/file"), "neither a file nor a Jinja template"),
        (("--max-request-body-size", "lots"), "max-request-body-size"),
        (("--max-n", "0"), "max_n"),
        (("--enable-auto-tool-choice",), "--enable-auto-tool-choice needs --tool-call-parser"),
    ],
)
def test_bad_flags(argv, message):
    args = parse(*argv)
    with pytest.raises(ConfigError, match=message):
        server_settings_from_args(args, engine_config_from_serve_args(args))

"""``pagedllm serve [MODEL]``: flags (vLLM's names where they overlap) and start-up."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pydantic import ByteSize, TypeAdapter, ValidationError

from pagedllm_core.config import EngineConfig
from pagedllm_core.entrypoints.engine_args import (
    add_engine_arguments,
    add_pooling_arguments,
    engine_settings_from_args,
    pooling_config_from_args,
)
from pagedllm_core.errors import ConfigError
from pagedllm_core.server.lora_modules import parse_lora_module, runtime_updating_allowed
from pagedllm_core.server.routing import ROUTING_POLICIES
from pagedllm_core.server.settings import ServerLimits, ServerSettings
from pagedllm_core.server.tool_parsers import TOOL_PARSERS

logger = logging.getLogger(__name__)

API_KEY_ENV = "PAGEDLLM_API_KEY"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DEFAULT_SHUTDOWN_TIMEOUT = 5.0


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` flags: MODEL, the server's own flags, and every engine flag."""
    limits = ServerLimits.model_fields
    parser.add_argument(
        "model_tag", nargs="?", default=None, metavar="MODEL",
        help="model to serve (same as --model; default: SmolLM2-135M-Instruct)",
    )
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    group.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    group.add_argument(
        "--api-key", default=None,
        help=f"require 'Authorization: Bearer KEY' on /v1 and tokenizer routes (default: ${API_KEY_ENV} if set)",
    )
    group.add_argument(
        "--served-model-name", nargs="+", default=None, metavar="NAME",
        help="names clients use as 'model'; the first is reported (default: the model argument)",
    )
    group.add_argument("--chat-template", default=None, help="Jinja chat template file (or template text)")
    group.add_argument(
        "--max-request-body-size", default=None,
        help=f"largest request body, e.g. 8MiB (default: {limits['max_request_body_bytes'].default} bytes)",
    )
    group.add_argument("--max-n", type=int, default=None, help=f"largest n per request (default: {limits['max_n'].default})")
    group.add_argument(
        "--max-logprobs", type=int, default=None,
        help=f"largest logprobs/top_logprobs per request (default: {limits['max_logprobs'].default})",
    )
    group.add_argument(
        "--request-timeout", type=float, default=None,
        help=f"seconds before a request is aborted with 504; 0 for none (default: {limits['request_timeout'].default:g})",
    )
    group.add_argument(
        "--headless", action="store_true",
        help="run only this node's tensor-parallel ranks (--node-rank > 0 of --nnodes), no API server; they join "
        "node 0 at --master-addr/--master-port and follow its engine (docs/distributed.md)",
    )
    group.add_argument(
        "--enable-auto-tool-choice", action="store_true",
        help="let tool_choice 'auto' (the default with tools) find calls in the output; needs --tool-call-parser",
    )
    group.add_argument(
        "--tool-call-parser", choices=sorted(TOOL_PARSERS), default=None,
        help="how tool calls are written by the model: hermes (Qwen, Hermes, SmolLM2), llama3_json, mistral",
    )
    group.add_argument(
        "--max-prompts-per-request", type=int, default=None,
        help=f"most prompts in one completions request (default: {limits['max_prompts_per_request'].default})",
    )
    group.add_argument(
        "--max-num-waiting-requests", type=int, default=None,
        help="most requests waiting outside the running batch; beyond it new requests get 429 with Retry-After; "
        f"0 for no limit (default: {limits['max_num_waiting_requests'].default})",
    )
    group.add_argument(
        "--shutdown-timeout", type=float, default=DEFAULT_SHUTDOWN_TIMEOUT,
        help="on SIGTERM, seconds requests in flight get to finish before they are aborted "
        f"(finish_reason 'abort'); the process then exits 0 (default: {DEFAULT_SHUTDOWN_TIMEOUT:g})",
    )
    group.add_argument(
        "--keep-serving-on-engine-death", action="store_true",
        help="keep the server up (answering 503) when the engine loop dies, instead of exiting non-zero so that "
        "a supervisor restarts it",
    )
    group.add_argument(
        "--enable-api-docs", action="store_true",
        help="serve /docs, /redoc and /openapi.json (behind --api-key when set); off by default",
    )
    group.add_argument(
        "--lora-modules", nargs="+", default=None, metavar="NAME=PATH",
        help='LoRA adapters to serve (needs --enable-lora), each as name=path or as JSON '
        '{"name": .., "path": .., "base_model_name": ..}; a request picks one with its "model"',
    )
    group.add_argument(
        "--allow-runtime-lora-updating", action="store_true",
        help="serve POST /v1/load_lora_adapter and /v1/unload_lora_adapter (also when "
        "PAGEDLLM_ALLOW_RUNTIME_LORA_UPDATING or VLLM_ALLOW_RUNTIME_LORA_UPDATING is true)",
    )
    group.add_argument(
        "--data-parallel-size", "-dp", type=int, default=1,
        help="engine replicas behind this one endpoint, each with its worker in its own process and an equal share "
        "of the CPU cores; requests are routed across them (default: 1, no replicas)",
    )
    group.add_argument(
        "--data-parallel-routing", choices=ROUTING_POLICIES, default="prefix_aware",
        help="with --data-parallel-size > 1: prefix_aware sends prompts sharing their first KV block to one replica "
        "(shorter ones to the least loaded), round_robin ignores the prompt (default: prefix_aware)",
    )
    group.add_argument("--uvicorn-log-level", choices=_LOG_LEVELS, default="info", help="uvicorn's log level")
    add_engine_arguments(parser)
    add_pooling_arguments(parser)


def engine_config_from_serve_args(args: argparse.Namespace) -> EngineConfig:
    settings = engine_settings_from_args(args)
    if args.model_tag is not None:
        if settings.get("model", args.model_tag) != args.model_tag:
            raise ConfigError(f"MODEL ({args.model_tag!r}) and --model ({settings['model']!r}) disagree; give one")
        settings["model"] = args.model_tag
    return EngineConfig.build(**settings)


def server_settings_from_args(args: argparse.Namespace, config: EngineConfig, task: str = "generate") -> ServerSettings:
    limits = {}
    if args.max_request_body_size is not None:
        try:
            limits["max_request_body_bytes"] = int(TypeAdapter(ByteSize).validate_python(args.max_request_body_size))
        except ValidationError:
            raise ConfigError(
                f"--max-request-body-size: expected bytes like 1048576 or 8MiB, got {args.max_request_body_size!r}"
            ) from None
    for name in ("max_n", "max_logprobs", "max_prompts_per_request"):
        if getattr(args, name) is not None:
            limits[name] = getattr(args, name)
    if args.max_num_waiting_requests is not None:
        limits["max_num_waiting_requests"] = args.max_num_waiting_requests or None
    if args.shutdown_timeout < 0:
        raise ConfigError(f"--shutdown-timeout must be >= 0 seconds, got {args.shutdown_timeout:g}")
    if args.request_timeout is not None:
        limits["request_timeout"] = args.request_timeout or None
    if args.data_parallel_size < 1:
        raise ConfigError(
            f"--data-parallel-size must be >= 1 (the number of engine replicas), got {args.data_parallel_size}"
        )
    if args.data_parallel_size > 1 and task != "generate":
        raise ConfigError(f"--data-parallel-size > 1 serves generation models; this model's task is {task!r}")
    lora_modules = [parse_lora_module(value) for value in args.lora_modules or []]
    if (lora_modules or args.allow_runtime_lora_updating) and not config.enable_lora:
        raise ConfigError("--lora-modules and --allow-runtime-lora-updating need --enable-lora")
    allow_runtime_lora_updating = config.enable_lora and runtime_updating_allowed(args.allow_runtime_lora_updating)
    try:
        return ServerSettings(
            served_model_names=args.served_model_name or [config.model or DEFAULT_MODEL_NAME],
            model_source=config.model or DEFAULT_MODEL_NAME,
            api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
            chat_template=_read_chat_template(args.chat_template),
            limits=ServerLimits(**limits),
            task=task,
            tool_call_parser=args.tool_call_parser,
            enable_auto_tool_choice=args.enable_auto_tool_choice,
            enable_api_docs=args.enable_api_docs,
            lora_modules=lora_modules,
            allow_runtime_lora_updating=allow_runtime_lora_updating,
            data_parallel_size=args.data_parallel_size,
            data_parallel_routing=args.data_parallel_routing,
        )
    except ValidationError as error:
        raise ConfigError(f"invalid server settings: {error}") from None


def _read_chat_template(value: str | None) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text()
    if "{{" in value or "{%" in value:
        return value
    raise ConfigError(f"--chat-template: {value!r} is neither a file nor a Jinja template")


def run_server(args: argparse.Namespace) -> None:
    """Load the model, then serve the OpenAI-compatible API until SIGTERM / Ctrl-C (or engine death).

    Raises :class:`EngineDeadError` (a non-zero exit) when it stopped because the engine died.
    """
    import uvicorn

    from pagedllm_core.engine.async_engine import AsyncLLMEngine, EngineDeadError
    from pagedllm_core.pooling.async_engine import AsyncEmbeddingEngine
    from pagedllm_core.pooling.loading import detect_task
    from pagedllm_core.server.app import build_app
    from pagedllm_core.server.data_parallel import DataParallelEngine
    from pagedllm_core.server.process import PagedLLMServer
    from pagedllm_core.server.request_context import configure_server_logging

    configure_server_logging()
    config = engine_config_from_serve_args(args)
    if args.headless:
        from pagedllm_core.executor.multiproc import run_headless

        exit_code = run_headless(config)
        if exit_code:
            raise SystemExit(exit_code)
        return
    pooling = pooling_config_from_args(args)
    task = detect_task(config, pooling)
    settings = server_settings_from_args(args, config, task)
    if task == "embed":
        engine = AsyncEmbeddingEngine.from_config(config, pooling)
    elif settings.data_parallel_size > 1:
        engine = DataParallelEngine.from_config(config, settings.data_parallel_size, settings.data_parallel_routing)
    else:
        engine = AsyncLLMEngine.from_config(config)
    app = build_app(engine, settings)
    logger.info("serving %s on http://%s:%d", settings.served_model_names[0], args.host, args.port)
    # Our access log (with tokens and request ids) replaces uvicorn's; log_config=None keeps our format.
    uvicorn_config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.uvicorn_log_level, access_log=False, log_config=None
    )
    server = PagedLLMServer(
        uvicorn_config, app.state.server, args.shutdown_timeout, args.keep_serving_on_engine_death
    )
    server.run()
    if server.engine_died:
        raise EngineDeadError("the engine loop died (see the log above); exiting so that a supervisor restarts it")

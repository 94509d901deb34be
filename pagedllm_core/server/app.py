"""The app factory: routes, the API key check, the body size limit, the access log and OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.pooling.async_engine import AsyncEmbeddingEngine
from pagedllm_core.server import chat, completions, embeddings, info, lora_routes, tokenization
from pagedllm_core.server.access_log import AccessLogMiddleware
from pagedllm_core.server.admission import InFlightRequests
from pagedllm_core.server.auth import ApiKeyMiddleware
from pagedllm_core.server.body_limit import BodySizeLimitMiddleware
from pagedllm_core.server.data_parallel import DataParallelEngine
from pagedllm_core.server.data_parallel_metrics import ReplicaCollector
from pagedllm_core.server.errors import install_error_handlers
from pagedllm_core.server.metrics import ServerMetrics
from pagedllm_core.server.responses import pagedllm_version
from pagedllm_core.server.responses_api import route as responses_api
from pagedllm_core.server.settings import ServerSettings
from pagedllm_core.server.state import ServerState
from pagedllm_core.server.tasks import require_task


def build_app(
    engine: AsyncLLMEngine | AsyncEmbeddingEngine | DataParallelEngine,
    settings: ServerSettings, shutdown_engine: bool = True
) -> FastAPI:
    """An OpenAI-compatible app serving ``engine``.

    ``/health``, ``/version`` and ``/metrics`` are open; every other path needs the API key when
    one is set, checked before the body is read. ``/docs``, ``/redoc`` and ``/openapi.json`` exist
    only with ``settings.enable_api_docs``. With ``shutdown_engine`` the engine loop stops when the
    app shuts down. ``settings.task`` says which engine it is: completions, chat and responses answer
    a generating engine, ``/v1/embeddings`` an embedding one; the others get a 400.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        for module in settings.lora_modules:
            await lora_routes.load_lora_module(app.state.server, module)
        yield
        if shutdown_engine:
            await asyncio.to_thread(engine.shutdown)

    docs = {} if settings.enable_api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="pagedllm", version=pagedllm_version(), lifespan=lifespan, **docs)
    in_flight = InFlightRequests(settings.limits.max_num_waiting_requests)
    metrics = ServerMetrics(engine)
    if isinstance(engine, DataParallelEngine):
        metrics.registry.register(ReplicaCollector(engine))
    app.state.server = ServerState(engine, settings, metrics, in_flight)
    for router in (info.ops_router, info.models_router, tokenization.router):
        app.include_router(router)
    for router in (completions.router, chat.router, responses_api.router):
        app.include_router(router, dependencies=[Depends(require_task("generate"))])
    app.include_router(embeddings.router, dependencies=[Depends(require_task("embed"))])
    if settings.allow_runtime_lora_updating:
        app.include_router(lora_routes.router, dependencies=[Depends(require_task("generate"))])
    install_error_handlers(app)
    # The last added runs first: access log, then the key, then the body limit.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.limits.max_request_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(AccessLogMiddleware)
    return app

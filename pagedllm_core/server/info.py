"""Operational routes: ``/health``, ``/version``, ``/metrics`` and the model list."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from pagedllm_core.server.data_parallel import DataParallelEngine
from pagedllm_core.server.responses import ModelCard, ModelList, pagedllm_version
from pagedllm_core.server.state import Server, ServerState

ops_router = APIRouter()
models_router = APIRouter()


@ops_router.get("/health")
async def health(server: Server) -> Response:
    """200 while the engine loop runs; 503 (an OpenAI error body) once it has died. With data
    parallelism: 200 while a replica lives, its body each replica's state (docs/data_parallel.md)."""
    server.engine.check_health()
    if isinstance(server.engine, DataParallelEngine):
        return JSONResponse(server.engine.summary())
    return Response(status_code=200)


@ops_router.get("/version")
async def show_version() -> dict[str, str]:
    return {"version": pagedllm_version()}


@ops_router.get("/metrics")
async def metrics(server: Server) -> Response:
    return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _model_card(server: ServerState, name: str) -> ModelCard:
    return ModelCard(id=name, root=server.settings.model_source, max_model_len=server.engine.max_model_len)


def _lora_card(server: ServerState, lora) -> ModelCard:
    return ModelCard(
        id=lora.lora_name,
        root=lora.lora_path,
        parent=lora.base_model_name or server.model_name,
        max_model_len=server.engine.max_model_len,
    )


@models_router.get("/v1/models", response_model=ModelList)
async def list_models(server: Server) -> ModelList:
    cards = [_model_card(server, name) for name in server.settings.served_model_names]
    return ModelList(data=cards + [_lora_card(server, lora) for lora in server.loras.all()])


@models_router.get("/v1/models/{model:path}", response_model=ModelCard)
async def retrieve_model(model: str, server: Server) -> ModelCard:
    lora = server.lora_request(model)
    return _model_card(server, model) if lora is None else _lora_card(server, lora)

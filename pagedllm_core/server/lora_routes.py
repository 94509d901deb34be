"""``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (vLLM's routes), mounted only when run-time
updating is allowed (``--allow-runtime-lora-updating`` or an env var), behind the API key like all of /v1."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from pagedllm_core.errors import ConfigError
from pagedllm_core.server.errors import APIError, InvalidRequestError
from pagedllm_core.server.lora_modules import LoRAModulePath
from pagedllm_core.server.state import Server, ServerState


class LoRAAdapterNotFoundError(APIError):
    """An unload names an adapter the server does not serve (404)."""

    status_code = 404
    error_type = "not_found_error"


class LoadLoRAAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None


router = APIRouter()


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(body: LoadLoRAAdapterRequest, server: Server) -> str:
    """Load an adapter and serve it as ``lora_name``: 400 when the name is taken or the adapter unusable."""
    if body.lora_name in server.settings.served_model_names or server.loras.get(body.lora_name) is not None:
        raise InvalidRequestError(f"the name {body.lora_name!r} is already served; unload it first", param="lora_name")
    try:
        await load_lora_module(server, LoRAModulePath(name=body.lora_name, path=body.lora_path))
    except ConfigError as error:
        raise InvalidRequestError(str(error), param="lora_path") from None
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, server: Server) -> str:
    """Stop serving an adapter (404 for an unknown name); requests already running with it finish with it."""
    lora_request = server.loras.get(body.lora_name)
    if lora_request is None or body.lora_int_id not in (None, lora_request.lora_int_id):
        raise LoRAAdapterNotFoundError(f"the LoRA adapter {body.lora_name!r} is not loaded", param="lora_name")
    server.loras.remove(body.lora_name)
    await server.engine.remove_lora(lora_request.lora_int_id)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."


async def load_lora_module(server: ServerState, module: LoRAModulePath) -> None:
    """Load and check an adapter on the engine, then serve it under ``module.name`` (``ConfigError`` if unusable)."""
    lora_request = server.loras.new_request(module.name, module.path, module.base_model_name or server.model_name)
    await server.engine.add_lora(lora_request)
    server.loras.add(lora_request)

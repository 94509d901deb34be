"""``POST /v1/embeddings``: embeddings of one or more inputs from a model served with ``--task embed``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from pagedllm_core.errors import ConfigError
from pagedllm_core.pooling.engine import PromptTooLongError
from pagedllm_core.server.embedding_protocol import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    encode_embedding,
)
from pagedllm_core.server.errors import InvalidRequestError, RequestTimeoutError
from pagedllm_core.server.responses import new_response_id
from pagedllm_core.server.state import Server

router = APIRouter()


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, server: Server) -> EmbeddingResponse:
    model = server.check_model(body.model)
    engine = server.engine
    params = body.to_pooling_params()
    try:
        engine.check_params(params)
    except ConfigError as error:
        raise InvalidRequestError(str(error), param="dimensions") from None
    token_ids = await asyncio.to_thread(_tokenize_all, engine, body)
    timeout = server.settings.limits.request_timeout
    try:
        embeddings = await asyncio.wait_for(engine.embed(token_ids, params), timeout)
    except TimeoutError:
        raise RequestTimeoutError(timeout) from None
    num_tokens = sum(len(ids) for ids in token_ids)
    return EmbeddingResponse(
        id=new_response_id("embd"),
        model=model,
        data=[
            EmbeddingData(index=index, embedding=encode_embedding(embedding, body.encoding_format))
            for index, embedding in enumerate(embeddings)
        ],
        usage=EmbeddingUsage(prompt_tokens=num_tokens, total_tokens=num_tokens),
    )


def _tokenize_all(engine, body: EmbeddingRequest) -> list[list[int]]:
    inputs = body.inputs()
    token_ids = []
    for index, value in enumerate(inputs):
        try:
            token_ids.append(engine.tokenize(value, body.truncate_prompt_tokens))
        except PromptTooLongError as error:
            raise InvalidRequestError(_which(index, inputs) + str(error), "input", "context_length_exceeded") from None
        except ConfigError as error:
            raise InvalidRequestError(_which(index, inputs) + str(error), "input") from None
    return token_ids


def _which(index: int, inputs: list) -> str:
    return f"input {index}: " if len(inputs) > 1 else ""

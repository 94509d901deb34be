"""``POST /tokenize`` and ``POST /detokenize`` (vLLM's shapes), with the served tokenizer."""

from __future__ import annotations

from fastapi import APIRouter

from pagedllm_core.server.protocol import DetokenizeRequest, TokenizeRequest
from pagedllm_core.server.responses import DetokenizeResponse, TokenizeResponse
from pagedllm_core.server.state import Server

router = APIRouter()


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, server: Server) -> TokenizeResponse:
    server.check_model(body.model)
    if body.messages is not None:
        tokens = await server.render_chat(body.messages, body.add_generation_prompt)
    else:
        tokens = await server.encode(body.prompt, add_special_tokens=body.add_special_tokens)
    return TokenizeResponse(count=len(tokens), max_model_len=server.engine.max_model_len, tokens=tokens)


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, server: Server) -> DetokenizeResponse:
    server.check_model(body.model)
    return DetokenizeResponse(prompt=await server.decode(body.tokens))

"""OpenAI's Responses API (``POST /v1/responses``), text in and text out, as vLLM serves it."""

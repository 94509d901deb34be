"""Read a server-sent-event response with raw httpx, as a client without the openai package would."""

from __future__ import annotations

import json

import httpx


def post_sse(http: httpx.Client, path: str, body: dict) -> list[dict]:
    """POST with ``stream: true``; returns the JSON events and checks the stream ends with [DONE]."""
    events, done = [], False
    with http.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ") and not done, line
            if line == "data: [DONE]":
                done = True
            else:
                events.append(json.loads(line.removeprefix("data: ")))
    assert done, "the stream did not end with data: [DONE]"
    return events


def joined_texts(events: list[dict], key=lambda choice: choice.get("text", "")) -> dict[int, str]:
    texts: dict[int, str] = {}
    for event in events:
        for choice in event["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + key(choice)
    return texts


def finish_reasons(events: list[dict]) -> dict[int, str]:
    return {
        choice["index"]: choice["finish_reason"]
        for event in events
        for choice in event["choices"]
        if choice.get("finish_reason")
    }

"""The classic anti-pattern: an ``async`` generator that iterates the synchronous ``openai`` SDK.

Every ``next()`` on the SDK's stream blocks the event loop until that one upstream stream has bytes, so all
other streams (and accepting new connections, and noticing disconnects) wait behind it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from openai import OpenAI

from . import MAX_CONNECTIONS, UPSTREAM_ENV

app = FastAPI()
client = OpenAI(
    base_url=os.environ.get(UPSTREAM_ENV, "http://127.0.0.1:9000/v1"), api_key="bench", max_retries=0,
    http_client=httpx.Client(limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                                                 max_keepalive_connections=MAX_CONNECTIONS),
                             timeout=httpx.Timeout(600, connect=10)),
)


@app.post("/v1/chat/completions")
async def chat(request: Request) -> StreamingResponse:
    body = await request.json()

    async def events() -> AsyncIterator[bytes]:
        stream = client.chat.completions.create(model=body.get("model", "bench"), messages=body["messages"],
                                                stream=True)
        try:
            for chunk in stream:  # blocks the event loop: the anti-pattern under test
                yield b"data: " + chunk.model_dump_json(exclude_unset=True).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            stream.close()

    return StreamingResponse(events(), media_type="text/event-stream")

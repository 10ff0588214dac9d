"""A plain byte-for-byte relay: ``httpx.AsyncClient.stream`` into a Starlette ``StreamingResponse``, closed by
a background task (the pattern HTTPX's docs show for proxies). No parsing, no event model: the floor of
what relaying costs in Python with these libraries."""

from __future__ import annotations

import os

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from . import MAX_CONNECTIONS, UPSTREAM_ENV

app = FastAPI()
client = httpx.AsyncClient(
    base_url=os.environ.get(UPSTREAM_ENV, "http://127.0.0.1:9000/v1"),
    limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS),
    timeout=httpx.Timeout(600, connect=10),
)


@app.post("/v1/chat/completions")
async def relay(request: Request) -> StreamingResponse:
    upstream = client.build_request(
        "POST", "chat/completions", content=await request.body(),
        headers={"content-type": "application/json", "authorization": "Bearer bench"},
    )
    resp = await client.send(upstream, stream=True)
    return StreamingResponse(
        resp.aiter_raw(), status_code=resp.status_code,
        media_type=resp.headers.get("content-type", "text/event-stream"),
        background=BackgroundTask(resp.aclose),
    )

"""FastAPI's own SSE (``fastapi.sse.EventSourceResponse`` with a ``yield``-ing path operation) over the
async ``openai`` SDK: the idiomatic way to write this in FastAPI today."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.sse import EventSourceResponse, ServerSentEvent
from openai import AsyncOpenAI
from pydantic import BaseModel

from . import MAX_CONNECTIONS, UPSTREAM_ENV

app = FastAPI()
client = AsyncOpenAI(
    base_url=os.environ.get(UPSTREAM_ENV, "http://127.0.0.1:9000/v1"), api_key="bench", max_retries=0,
    http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                                                      max_keepalive_connections=MAX_CONNECTIONS),
                                  timeout=httpx.Timeout(600, connect=10)),
)


class ChatRequest(BaseModel):
    model: str = "bench"
    messages: list[dict[str, Any]]
    stream: bool = True


@app.post("/v1/chat/completions", response_class=EventSourceResponse)
async def chat(req: ChatRequest) -> AsyncIterator[ServerSentEvent]:
    stream = await client.chat.completions.create(model=req.model, messages=req.messages,  # type: ignore[arg-type]
                                                  stream=True)
    async with stream:
        async for chunk in stream:
            yield ServerSentEvent(raw_data=chunk.model_dump_json(exclude_unset=True))
    yield ServerSentEvent(raw_data="[DONE]")

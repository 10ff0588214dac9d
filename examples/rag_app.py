"""A small FastAPI app with ssegate as a library: retrieve, call the model, stream, with every guarantee.

Run it (the embedded demo model, no key, no network)::

    .venv/bin/uvicorn examples.rag_app:app --port 8001
    curl -N -X POST 'http://127.0.0.1:8001/ask?q=Why+do+streams+need+heartbeats'

``POST /ask`` finds the lines of ``notes.txt`` that share the most words with the question (the retrieval step of
any RAG app), asks the model through ``gate.complete`` with them as context, and streams the answer with
``gate.stream``: ssegate's native stream (CONTRACT §3), with heartbeats before the first token, the commit rule,
cancel on disconnect, and resume. ``gate.router`` is mounted under ``/llm``, so a client resumes
(``GET /llm/v1/streams/{id}``) or cancels (``POST /llm/v1/streams/{id}/cancel``) the app's own streams, and the
whole gateway API (OpenAI-compatible too) is there as well. Your own middleware keeps working: this app adds a
``BaseHTTPMiddleware`` and ``GZipMiddleware`` (which leaves ``text/event-stream`` uncompressed).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.middleware.gzip import GZipMiddleware

import ssegate

NOTES = Path(__file__).with_name("notes.txt").read_text().splitlines()

gate = ssegate.Gateway()
app = FastAPI(title="ssegate example: retrieve, then stream", lifespan=gate.lifespan)
app.include_router(gate.router, prefix="/llm")
app.add_middleware(GZipMiddleware, minimum_size=100)


@app.middleware("http")
async def timing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers["X-App"] = "rag-example"
    return response


def retrieve(question: str, k: int = 2) -> list[str]:
    """The ``k`` notes that share the most words with the question."""
    words = set(re.findall(r"\w+", question.lower()))
    scored = sorted(NOTES, key=lambda line: -len(words & set(re.findall(r"\w+", line.lower()))))
    return scored[:k]


@app.post("/ask")
async def ask(request: Request, q: str) -> Response:
    async def answer() -> AsyncIterator[ssegate.Part | ssegate.Finish]:
        notes = retrieve(q)
        yield ssegate.Reasoning(f"Found {len(notes)} notes about this. ")
        prompt = "Answer from these notes:\n" + "\n".join(notes) + f"\n\nQuestion: {q}"
        async for part in gate.complete([{"role": "user", "content": prompt}]):
            yield part

    return gate.stream(request, answer(), resume_grace_s=30)

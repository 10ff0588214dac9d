"""A small FastAPI app with ssegate as a library: retrieve, call the model, stream, with every guarantee.

Run it (the embedded demo model, no key, no network)::

    .venv/bin/uvicorn examples.rag_app:app --port 8001
    curl -N -X POST 'http://127.0.0.1:8001/ask?q=Why+do+streams+need+heartbeats'

``POST /ask`` finds the lines of ``notes.txt`` that share the most words with the question (the retrieval step of
any RAG app), asks the model through ``gate.complete`` with them as context, and streams the answer with
``gate.stream``: ssegate's native stream (CONTRACT §3), with heartbeats before the first token, the commit rule,
cancel on disconnect, and resume. The answer's ``finally`` runs however it ends (finished, failed, or the client
left and the model was stopped at once): the place where an app records what an answer cost. Here the record goes
to a list, ``GET /answers``.

``gate.router`` is mounted under ``/llm``, so a client resumes (``GET /llm/v1/streams/{id}``) or cancels
(``POST /llm/v1/streams/{id}/cancel``) the app's own streams, and the whole gateway API (OpenAI-compatible too) is
there as well. Your own middleware keeps working: the app has an ``@app.middleware("http")`` (Starlette's
``BaseHTTPMiddleware``) that adds ``X-App``, ``GZipMiddleware`` (which leaves ``text/event-stream`` uncompressed)
and ``CORSMiddleware``. ``create_app(gate, middleware=False)`` builds the same app without them.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware

import ssegate

NOTES = Path(__file__).with_name("notes.txt").read_text().splitlines()


def retrieve(question: str, k: int = 2) -> list[str]:
    """The ``k`` notes that share the most words with the question."""
    words = set(re.findall(r"\w+", question.lower()))
    return sorted(NOTES, key=lambda line: -len(words & set(re.findall(r"\w+", line.lower()))))[:k]


def create_app(gate: ssegate.Gateway | None = None, *, middleware: bool = True) -> FastAPI:
    gate = gate if gate is not None else ssegate.Gateway()  # settings from SSEGATE_* (the demo model by default)
    app = FastAPI(title="ssegate example: retrieve, then stream", lifespan=gate.lifespan)
    app.include_router(gate.router, prefix="/llm")
    answers: deque[dict[str, Any]] = deque(maxlen=100)

    @app.post("/ask")
    async def ask(request: Request, q: str, grace: Annotated[float, Query(ge=0)] = 30) -> Response:
        """``grace``: how long the answer goes on after the client's connection drops, for it to resume."""

        async def answer() -> AsyncIterator[ssegate.Part | ssegate.Finish]:
            ended = "stopped"  # the client left (or cancelled): the model call was closed
            try:
                notes = retrieve(q)
                yield ssegate.Reasoning(f"Found {len(notes)} notes about this. ")
                context = "Answer from these notes:\n" + "\n".join(notes)
                async for part in gate.complete([{"role": "system", "content": context},
                                                 {"role": "user", "content": q}]):
                    yield part
                ended = "done"
            except Exception:
                ended = "failed"  # ssegate sends the client a typed error (internal_error for anything else)
                raise
            finally:
                answers.append({"question": q, "ended": ended, "at": time.time()})

        return gate.stream(request, answer(), resume_grace_s=grace)

    @app.get("/answers")
    async def recent_answers() -> list[dict[str, Any]]:
        return list(answers)

    if middleware:
        @app.middleware("http")
        async def tag(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            response = await call_next(request)
            response.headers["X-App"] = "rag-example"
            return response

        app.add_middleware(GZipMiddleware, minimum_size=100)
        app.add_middleware(CORSMiddleware, allow_origins=["*"], expose_headers=["X-Stream-Id"])
    return app


app = create_app()

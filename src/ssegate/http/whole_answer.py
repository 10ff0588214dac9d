"""An answer sent whole, not streamed: ``stream: false`` of ``/v1/chat/completions`` and ``/v1/responses``.

``WholeAnswerResponse`` attaches to the generation, folds every log entry into a state as it is appended (so no
bound on the log's length cuts the answer), and when the log ends answers once: the subclass's body with
``200``, or the generation's error with its status, in OpenAI's shape. The client's disconnect is watched
meanwhile (``receive()``): it detaches from the generation, which cancels it. The whole answer goes out in one
write; a client that then reads none of it is dropped after ``SEND_TIMEOUT_S`` (``drop_if_unread``).

A subclass says what the state is (``new_state``), how an entry changes it (``feed``) and what the answer is
(``success``: its body and headers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..core.entries import ERROR
from ..errors import NotFound
from ..sse import dumps
from .encoders import as_error
from .response import RAW_KEY, json_error_response
from .uvicorn_glue import drop_if_unread

if TYPE_CHECKING:
    from ..core.generation import Generation

__all__ = ["WholeAnswerResponse"]

S = TypeVar("S")


class WholeAnswerResponse(Response, Generic[S]):
    def __init__(self, gen: Generation, on_discard: Callable[[Generation], Any] | None = None,
                 send_timeout_s: float = 30.0) -> None:
        self.status_code = 200
        self.background = None
        self.gen = gen
        self.on_discard = on_discard
        self.send_timeout_s = send_timeout_s
        self.disconnected = False
        self._fut: asyncio.Future[None] | None = None

    def new_state(self) -> S:
        raise NotImplementedError

    def feed(self, state: S, kinds: list[int], payloads: list[Any]) -> None:
        raise NotImplementedError

    def success(self, state: S) -> tuple[bytes, dict[str, str]]:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get(RAW_KEY)
        gen = self.gen
        gen.attach()
        watcher = asyncio.get_running_loop().create_task(self._watch(raw[0] if raw is not None else receive))
        detached = False
        try:
            state = await self._collect()
            if state is None:
                return
            gen.detach()
            detached = True
            terminal = gen.log.terminal()
            assert terminal is not None
            if terminal[0] == ERROR:
                if self.on_discard is not None:
                    self.on_discard(gen)
                err = as_error(gen.error, terminal[1])
                await json_error_response(send, err.status, dumps(err.openai_body()), err.headers())
                return
            body, headers = self.success(state)
            await json_error_response(send, 200, body, headers)
            if raw is not None:
                drop_if_unread(raw[1], self.send_timeout_s)  # the whole answer went out in one write
        finally:
            watcher.cancel()
            if not detached:
                gen.detach()

    async def _watch(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                fut = self._fut
                if fut is not None and not fut.done():
                    fut.set_result(None)
                return

    async def _collect(self) -> S | None:
        """The state fed every entry as it is appended; ``None`` when the client left first."""
        log = self.gen.log
        state = self.new_state()
        cursor = 0
        while not self.disconnected:
            new = log.since(cursor)
            if new is None:  # pragma: no cover - this follower reads every append as it happens
                raise NotFound("the answer outgrew the event log")
            self.feed(state, *new)
            cursor = log.last_seq
            if log.finished:
                return state
            fut = self._fut = log.waiter()
            try:
                await fut
            finally:
                log.discard_waiter(fut)
                self._fut = None
        return None

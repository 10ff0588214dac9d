"""The embedded ``demo`` model: no key, no network, a readable answer paced like a real model.

The answer is composed from a small built-in corpus: the prompt's words choose the topic, a hash of the
prompt seeds the choice of sentences, so the same prompt always gets the same answer and different prompts
get different ones. Tokens are word pieces (a word with its leading space, punctuation apart), emitted at
``tokens_per_s`` after ``ttft_s``. Usage is exact: the same tokenizer counts the prompt and the answer.

It doubles as the scriptable model for tests: a last user message of the form
``/script {"deltas": [...], "ttft": 0.1, "delay": 0.01, "fail_at": 3, "error": "upstream_error",
"finish_reason": "stop"}`` plays exactly that (``error`` is any ssegate error code, raised after
``fail_at`` deltas; ``"stall": true`` waits forever after the deltas).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from ..errors import GatewayError, InvalidRequest, error_from_code
from .base import ChatRequest, Finish, ProviderEvent, Usage

__all__ = ["DemoProvider", "compose_answer", "tokenize"]

_TOKEN = re.compile(r"\s*[\w'’-]+|\s*[^\w\s]|\s+")

_TOPICS: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "streaming": (
        ("sse", "stream", "streaming", "event", "events", "eventsource", "server-sent", "token", "tokens"),
        [
            "Server-Sent Events let a server push a stream of text events over one ordinary HTTP response.",
            "Each event is a few lines of text, and a blank line marks where one event ends and the next begins.",
            "Because the transport is plain HTTP, it passes through proxies and load balancers that already work.",
            "A browser reads such a stream with EventSource, which reconnects by itself and sends the last event id.",
            "Streaming matters for language models because people start reading long before the answer is finished.",
            "The first token usually arrives in a few hundred milliseconds, while the whole answer can take seconds.",
            "Sending each token the moment it exists makes a slow model feel fast.",
            "Proxies must be told not to buffer the response, or the tokens arrive all at once at the end.",
        ],
    ),
    "models": (
        ("llm", "model", "models", "gpt", "ai", "language", "neural", "transformer", "prompt", "claude"),
        [
            "A language model writes text one token at a time, each token chosen from what came before.",
            "A token is a short piece of text, often a word or part of a word.",
            "The model reads the whole conversation as its prompt and continues it.",
            "Larger models tend to know more, but they also take longer to produce each token.",
            "Sampling settings such as temperature decide how adventurous each choice is.",
            "Every token the model generates costs compute, so stopping early when nobody listens saves money.",
            "Usage is counted in tokens: the prompt going in and the completion coming out.",
        ],
    ),
    "network": (
        ("http", "network", "proxy", "nginx", "tcp", "connection", "latency", "api", "server", "web"),
        [
            "An HTTP connection carries the request up and the streamed response back down.",
            "When a client disconnects, the server sees the socket close and can stop the work it was doing.",
            "Idle connections are often cut by proxies after a minute, so servers send small heartbeats.",
            "Latency is the time a byte takes to travel, and every hop in the path adds some.",
            "A load balancer spreads clients over several servers so that one failure does not stop the service.",
            "Timeouts protect a server from clients that never finish and from upstreams that never answer.",
        ],
    ),
    "general": (
        (),
        [
            "That is a good question, and the short answer is that it depends on what you need.",
            "It helps to start with the simplest version that works and to measure before changing anything.",
            "Most problems become easier once they are split into small parts with clear boundaries.",
            "A clear error message saves more time than any amount of clever code.",
            "Small, well-named pieces are easier to test, and tested pieces are easier to trust.",
            "Writing things down as you go makes the next step obvious more often than not.",
            "When in doubt, try it on a small example first and look at what actually happens.",
        ],
    ),
}

_OPENERS = [
    "You asked: “{q}”. Here is what I can tell you.",
    "Good question: “{q}”.",
    "Let me answer “{q}” in a few sentences.",
    "About “{q}”: here is a short answer.",
]
_CLOSERS = [
    "I hope this helps.",
    "Ask me a follow-up question if you want more detail.",
    "That is the gist of it.",
]


def tokenize(text: str) -> list[str]:
    """Word pieces: a word or a punctuation mark with the white space before it."""
    return _TOKEN.findall(text)


def compose_answer(prompt: str) -> str:
    """A deterministic, readable, multi-sentence answer that depends on the prompt."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode("utf-8", "replace")).digest()[:8], "big")
    rng = random.Random(seed)
    words = set(re.findall(r"[\w-]+", prompt.lower()))
    topics = [name for name, (keys, _) in _TOPICS.items() if words.intersection(keys)] or ["general"]
    pool: list[str] = []
    for name in topics:
        pool += _TOPICS[name][1]
    if len(pool) < 6:
        pool += _TOPICS["general"][1]
    q = " ".join(prompt.split())
    if len(q) > 60:
        q = q[:57].rstrip() + "..."
    sentences = [rng.choice(_OPENERS).format(q=q or "nothing in particular")]
    sentences += rng.sample(pool, k=min(len(pool), rng.randint(4, 6)))
    sentences.append(rng.choice(_CLOSERS))
    return " ".join(sentences)


class DemoProvider:
    name = "demo"
    label = "demo"

    def __init__(self, *, ttft_s: float = 0.3, tokens_per_s: float = 40.0) -> None:
        self.ttft_s = ttft_s
        self.delay_s = 1.0 / tokens_per_s

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ProviderEvent, None]:
        last = request.messages[-1]["content"] if request.messages else ""
        if last.startswith("/script "):
            async for ev in self._scripted(request, _parse_script(last[8:])):
                yield ev
            return
        prompt_tokens = sum(len(tokenize(m["content"])) + 4 for m in request.messages)
        tokens = tokenize(compose_answer(last))
        limit = request.max_tokens
        reason = "stop"
        if limit is not None and len(tokens) > limit:
            tokens, reason = tokens[:limit], "length"
        tokens, reason = _apply_stop(tokens, request.stop, reason)
        await asyncio.sleep(self.ttft_s)
        for i, tok in enumerate(tokens):
            if i:
                await asyncio.sleep(self.delay_s)
            yield tok
        yield Finish(reason, Usage(prompt_tokens, len(tokens)))

    async def _scripted(self, request: ChatRequest, script: dict[str, Any]) -> AsyncGenerator[ProviderEvent, None]:
        deltas = [str(d) for d in script.get("deltas", ["scripted"])]
        delay = float(script.get("delay", 0.0))
        fail_at = script.get("fail_at")
        await asyncio.sleep(float(script.get("ttft", 0.0)))
        if request.max_tokens is not None:
            deltas = deltas[: request.max_tokens]
        for i, d in enumerate(deltas):
            if fail_at is not None and i == int(fail_at):
                raise _script_error(script)
            if i and delay:
                await asyncio.sleep(delay)
            yield d
        if fail_at is not None and int(fail_at) >= len(deltas):
            raise _script_error(script)
        if script.get("stall"):
            await asyncio.Event().wait()
        yield Finish(str(script.get("finish_reason", "stop")), Usage(int(script.get("prompt_tokens", 5)), len(deltas)))

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _parse_script(raw: str) -> dict[str, Any]:
    try:
        script = orjson.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"/script needs a JSON object: {exc}") from exc
    if not isinstance(script, dict):
        raise InvalidRequest("/script needs a JSON object")
    return script


def _script_error(script: dict[str, Any]) -> GatewayError:
    code = str(script.get("error", "upstream_error"))
    return error_from_code(code, str(script.get("message", f"scripted failure: {code}")))


def _apply_stop(tokens: list[str], stop: list[str] | None, reason: str) -> tuple[list[str], str]:
    if not stop:
        return tokens, reason
    text = ""
    for i, tok in enumerate(tokens):
        text += tok
        for s in stop:
            if s and s in text:
                return tokens[:i], "stop"
    return tokens, reason

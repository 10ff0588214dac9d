"""What the embedded ``demo`` model says: deterministic answers, reasoning, tool calls and JSON, offline.

Pure functions of the request (no I/O, no clock), so the same request always gets the same answer:

- ``compose_answer(prompt)``: a readable multi-sentence answer from a small built-in corpus; the prompt's words
  choose the topic, a hash of the prompt seeds the choice of sentences;
- ``compose_reasoning(prompt, effort, tools)``: a few sentences of "thinking" (more for a higher effort);
- ``choose_tool_calls(prompt, tools, tool_choice, parallel)``: the tools whose names and descriptions share the
  most words with the prompt, called with arguments built from their JSON schemas and the prompt (a city-like
  capitalised word for ``city``/``location`` parameters, a number from the prompt for numbers, an enum value the
  prompt names, ...);
- ``answer_from_tool_results(messages)``: the answer after ``tool`` messages, quoting what each tool returned;
- ``json_answer(prompt, response_format)``: an object matching a ``json_schema`` (or ``{"answer": ...}``).

Tokens are word pieces (``tokenize``: a word with its leading space, punctuation apart).
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

import orjson

__all__ = [
    "answer_from_tool_results",
    "choose_tool_calls",
    "compose_answer",
    "compose_reasoning",
    "json_answer",
    "tokenize",
]

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

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+(?:\.\d+)?")
_STOP = frozenset("""a an the of in on at for to and or is are was be what whats what's how who which when where why
do does can could would should will my your me you it its this that with from by about please tell give get
""".split())
_PLACE_PARAMS = ("city", "location", "place", "country", "region", "town", "where")
_EFFORT_SENTENCES = {"minimal": 1, "low": 2, "medium": 3, "high": 5, "xhigh": 6, "max": 6}


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _name_words(name: str) -> set[str]:
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ").replace(".", " ")
    return {w.lower() for w in spaced.split()} - _STOP


def _tool_score(tool: dict[str, Any], words: set[str]) -> int:
    fn = tool.get("function") or {}
    name = _name_words(str(fn.get("name", "")))
    described = set(_words(str(fn.get("description") or ""))) - _STOP
    return 3 * len(name & words) + len(described & words)


def _places(prompt: str) -> list[str]:
    """Capitalised words (and runs of them) that are not the first word of a sentence: likely names."""
    found = []
    for m in re.finditer(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-z]+(?:\s+[A-Z][a-z]+)*)", prompt):
        if m.group(1).lower() not in _STOP:
            found.append(m.group(1))
    return found


def _value(name: str, schema: dict[str, Any], prompt: str, nth: int) -> Any:
    """An argument value for parameter ``name`` of JSON schema ``schema``, taken from the prompt where it can."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        lowered = prompt.lower()
        return next((v for v in enum if str(v).lower() in lowered), enum[0])
    if kind in ("number", "integer"):
        numbers = re.findall(r"-?\d+(?:\.\d+)?", prompt)
        if not numbers:
            return 1
        return int(float(numbers[0])) if kind == "integer" else float(numbers[0])
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    places = _places(prompt)
    if any(p in name.lower() for p in _PLACE_PARAMS) and places:
        return places[min(nth, len(places) - 1)]
    quoted = re.findall(r"[\"“]([^\"”]+)[\"”]", prompt)
    if quoted:
        return quoted[0]
    words = [w for w in re.findall(r"[\w'-]+", prompt) if w.lower() not in _STOP]
    return " ".join(words[:6]) or prompt.strip()[:60]


def _arguments(tool: dict[str, Any], prompt: str, nth: int) -> str:
    params = (tool.get("function") or {}).get("parameters") or {}
    props = params.get("properties") if isinstance(params, dict) else None
    if not isinstance(props, dict) or not props:
        return "{}"
    required = [n for n in params.get("required") or [] if n in props] or list(props)[:1]
    args = {n: _value(n, props[n] if isinstance(props[n], dict) else {}, prompt, nth) for n in required}
    return orjson.dumps(args).decode()


def choose_tool_calls(prompt: str, tools: list[dict[str, Any]], tool_choice: Any,
                      parallel: bool | None) -> list[tuple[str, str]]:
    """``[(name, arguments JSON)]``: the calls the demo model makes for ``prompt`` (none: it answers in text)."""
    if not tools or tool_choice == "none":
        return []
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        tool = next(t for t in tools if t["function"]["name"] == name)
        return [(name, _arguments(tool, prompt, 0))]
    words = set(_words(prompt)) - _STOP
    scored = sorted(((_tool_score(t, words), i) for i, t in enumerate(tools)), key=lambda x: (-x[0], x[1]))
    chosen = [i for score, i in scored if score > 0]
    if not chosen and tool_choice == "required":
        chosen = [scored[0][1]]
    if parallel is False:
        chosen = chosen[:1]
    places = _places(prompt)
    if len(chosen) == 1 and len(places) > 1 and parallel is not False:
        chosen = chosen * min(len(places), 4)  # "weather in Paris and in Rome": one call per place
    return [(tools[i]["function"]["name"], _arguments(tools[i], prompt, n)) for n, i in enumerate(chosen[:4])]


def answer_from_tool_results(messages: list[dict[str, Any]]) -> str:
    """The answer after the tool calls of the last assistant turn came back."""
    names: dict[str, str] = {}
    for m in messages:
        for call in m.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
    results = []
    for m in reversed(messages):
        if m.get("role") != "tool":
            break
        content = m.get("content")
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content or [])
        results.append((names.get(m.get("tool_call_id", ""), "the tool"), " ".join(text.split())[:400]))
    results.reverse()
    parts = [f"{name} returned: {text}." if text else f"{name} returned nothing." for name, text in results]
    return "Here is what I found. " + " ".join(parts) + " I hope this helps."


def compose_reasoning(prompt: str, effort: str, tools: list[dict[str, Any]] | None,
                      calls: list[tuple[str, str]]) -> str:
    n = _EFFORT_SENTENCES.get(effort, 3)
    q = " ".join(prompt.split())
    if len(q) > 60:
        q = q[:57].rstrip() + "..."
    sentences = [f"The question is “{q}”."]
    if calls:
        names = ", ".join(dict.fromkeys(name for name, _ in calls))
        sentences.append(f"I can answer it with {names}, so I will call {'them' if len(calls) > 1 else 'it'}.")
    elif tools:
        sentences.append("None of the tools fits, so I will answer directly.")
    sentences += [
        "Let me recall what I know about this topic.",
        "A short, clear answer in a few sentences is best.",
        "I should mention why it matters, not only what it is.",
        "Finally, I will close with an offer to go deeper.",
        "That covers it.",
    ]
    return " ".join(sentences[: max(n, 2 if calls or tools else 1)])


def _instance(schema: Any, prompt: str, depth: int = 0) -> Any:
    if not isinstance(schema, dict) or depth > 6:
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][0]
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: _instance(sub, prompt, depth + 1) if isinstance(sub, dict) and sub.get("type") != "string"
                else _value(name, sub if isinstance(sub, dict) else {}, prompt, 0) for name, sub in props.items()}
    if kind == "array":
        item = _instance(schema.get("items") or {"type": "string"}, prompt, depth + 1)
        return [item] if item is not None else []
    return _value("value", schema, prompt, 0)


def json_answer(prompt: str, response_format: dict[str, Any]) -> str:
    """The answer as JSON: an instance of the requested schema, or ``{"answer": <the text answer>}``."""
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict) and schema:
            return orjson.dumps(_instance(schema, prompt)).decode()
    return orjson.dumps({"answer": compose_answer(prompt)}).decode()

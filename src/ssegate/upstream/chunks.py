"""An OpenAI-compatible stream's ``chat.completion.chunk`` decoded into the fields a provider reads, not into a dict
of every field.

Each chunk carries ``id``, ``object``, ``created``, ``model``, ``system_fingerprint`` and the like, which nothing
here reads: ``decode_chat_chunk`` (msgspec, typed by ``ChatChunk``) skips them without making an object of them.
The path to what is read is typed down to a tool call's ``function`` (``ChatChunk.choices`` → ``ChunkChoice.delta``
→ ``ChunkDelta.tool_calls`` → ``ToolCallFragment.function``), so a chunk costs no dict per level; the values
themselves (a delta's ``content``, a call's ``index`` and ``arguments``, ``usage``, ``error``) stay the JSON values
they are, judged by ``openai._ChunkReader`` as before. The reader takes each struct's fields as a tuple
(``msgspec.structs.astuple``), by their position here (``tests/test_wire.py`` holds the two together): in compiled
code a struct's attribute is a generic ``getattr``. The structs are not tracked by the garbage collector
(``gc=False``): a decoded chunk holds JSON values only, which cannot refer back to it.

``orjson.loads`` of the whole object was a third of an event's instructions (7.1k of 21.0k); a dict per level
and its keys read one by one, 18.4k an event of text and 23.6k of reasoning and tool-call pieces; typed to the
tool call and read as tuples, 17.3k and 21.6k (``python -m bench.callgrind --tokens 100 [--parts]``).

``error`` is ``msgspec.UNSET`` when the chunk has no such key, so a chunk that has one (even ``null``) is read as a
mid-stream error, as it was. Malformed JSON raises ``msgspec.DecodeError``, and JSON of another shape (not an
object; ``choices`` not a list of objects; a ``delta``, tool call or ``function`` neither an object nor ``null``)
``msgspec.ValidationError`` (both ``ValueError``s): ``error_map`` says them as the upstream's malformed data and data
of an unexpected shape. Unknown fields are skipped at every level. Not compiled: a ``msgspec.Struct`` is a class
mypyc does not make (its decoder is C).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["ChatChunk", "ChunkChoice", "ChunkDelta", "ChunkFunction", "ToolCallFragment", "decode_chat_chunk"]


class ChunkFunction(msgspec.Struct, gc=False):
    name: Any = None
    arguments: Any = None


class ToolCallFragment(msgspec.Struct, gc=False):
    index: Any = None
    id: Any = None
    function: ChunkFunction | None = None


class ChunkDelta(msgspec.Struct, gc=False):
    content: Any = None
    reasoning_content: Any = None
    reasoning: Any = None
    reasoning_details: Any = None
    tool_calls: list[ToolCallFragment] | None = None


class ChunkChoice(msgspec.Struct, gc=False):
    delta: ChunkDelta | None = None
    finish_reason: Any = None


class ChatChunk(msgspec.Struct, gc=False):
    choices: list[ChunkChoice] | None = None
    usage: Any = None
    error: Any = msgspec.UNSET


decode_chat_chunk: Final = msgspec.json.Decoder(ChatChunk).decode

"""An OpenAI-compatible stream's ``chat.completion.chunk`` decoded into the three fields a provider reads, not into
a dict of every field.

Each chunk carries ``id``, ``object``, ``created``, ``model``, ``system_fingerprint`` and the like, which nothing
here reads: ``decode_chat_chunk`` (msgspec, typed by ``ChatChunk``) skips them without making an object of them,
and keeps ``choices``, ``usage`` and ``error`` as the plain JSON values they are (lists, dicts, strings), read by
``openai._ChunkReader`` as before. ``orjson.loads`` of the whole object was a third of an event's instructions:
7.1k of 21.0k an event (``python -m bench.callgrind --tokens 100``).

``error`` is ``msgspec.UNSET`` when the chunk has no such key, so a chunk that has one (even ``null``) is read as a
mid-stream error, as it was. Malformed JSON raises ``msgspec.DecodeError`` and JSON that is not an object
``msgspec.ValidationError`` (both ``ValueError``s): ``error_map`` says them as the upstream's malformed data and
data of an unexpected shape, as it says orjson's and a wrong shape's. Not compiled: a ``msgspec.Struct`` is a class
mypyc does not make (its decoder is C).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["ChatChunk", "decode_chat_chunk"]


class ChatChunk(msgspec.Struct):
    choices: Any = None
    usage: Any = None
    error: Any = msgspec.UNSET


decode_chat_chunk: Final = msgspec.json.Decoder(ChatChunk).decode

"""The Vercel AI SDK's UI message stream (what ``useChat`` consumes), over the same generations and log.

``messages.py`` turns the SDK's request (UIMessages) into a ``ChatRequest``; ``encoder.py`` turns log entries into
the protocol's chunks; ``chats.py`` remembers which stream answers each chat id (the SDK resumes by chat id);
``routes.py`` serves ``POST /api/chat``, ``GET /api/chat/{id}/stream`` and ``POST /api/chat/{id}/cancel``.
"""

from .routes import router

__all__ = ["router"]

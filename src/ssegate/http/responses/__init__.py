"""OpenAI's Responses API over ssegate's generations: ``request.py`` (bodies → ``ChatRequest``), ``encoder.py`` (a
log → Responses events and the response object), ``routes.py`` (create, retrieve and resume, cancel)."""

from .routes import router

__all__ = ["router"]

"""FastAPI routers: ``native`` (the native streams), ``streams`` (resume, cancel), ``openai_chat``, ``ops``,
``tokens`` (stream tokens)."""

"""FastAPI routers: ``chat.py`` (native streams), ``streams.py`` (resume, cancel), ``ops.py``."""

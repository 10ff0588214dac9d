"""Where events live: ``memory.py`` (the default) and ``redis.py`` (scale-out, CONTRACT §6)."""

from .base import DELTA, DONE, ERROR, START, TERMINAL, Entry
from .memory import MemoryEventLog, StreamLog

__all__ = ["DELTA", "DONE", "ERROR", "START", "TERMINAL", "Entry", "MemoryEventLog", "StreamLog"]

"""The core: what one stream is, independent of HTTP, of any upstream and of Redis.

``entries`` (what a stream's log holds), ``log`` (the in-process event log), ``generation`` (the life of one
generation: retries, timeouts, cancel, exactly one terminal entry) and ``limits`` (admission control). Nothing
here imports the layers above it (``upstream``, ``cluster``, ``http``, ``client``).
"""

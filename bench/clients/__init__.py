"""Other upstream HTTP clients for the gateway, for an A/B of ``ssegate.upstream.httpclient`` (``--ab``).

Each module offers the same small API the providers use (``ssegate/upstream/events.py``):

- ``Pool(limit=0, connect_timeout=10.0)``; ``await pool.request(method, url, headers, body, sent)`` returns a
  ``Response`` once its head arrived (``sent(resp)`` is called as soon as the request is under way, so that it
  can be aborted while the head is awaited); ``await pool.aclose()``; ``active`` / ``waiting`` / ``idle``;
- ``Response``: ``status``, ``headers`` (lower-case names), ``complete``; ``await read(limit)``;
  ``stream(on_body)`` pushes body bytes to ``on_body`` (an exception from it fails the response);
  ``await finished()`` waits for the end of the body or ``stop()`` (``stopped`` says it was called);
  ``close()`` gives a connection whose response was read to its end back to the pool (after ``stop()``, the rest
  of the body is read first), else closes it; ``abort()`` shuts the socket down at once.

- ``aiohttp_pool``: one ``aiohttp.ClientSession`` whose connector keeps connections; a task per response reads
  the body (``iter_any``) and hands it on; responses are read to their end and released to the pool.
- ``curl_pool``: libcurl's multi interface (``pycurl``) driven by the event loop: ``CURLMOPT_SOCKETFUNCTION``
  maps curl's sockets onto ``loop.add_reader`` / ``add_writer``, ``CURLMOPT_TIMERFUNCTION`` onto
  ``loop.call_later``; body bytes reach ``on_body`` from curl's write callback, inside the read callback.

``bench/launch_ssegate.py`` starts ``ssegate serve`` with one of them in place of its own ``Pool``.
"""

from __future__ import annotations

import contextlib
import os
import socket

__all__ = ["CLIENTS", "shutdown_fd"]

CLIENTS = {"httpclient": "ssegate.upstream.httpclient", "aiohttp": "bench.clients.aiohttp_pool",
           "pycurl": "bench.clients.curl_pool"}
"""A/B variant name -> the module whose ``Pool`` the gateway uses."""


def shutdown_fd(fd: int) -> None:
    """Shut a socket down now (the peer sees the FIN before anything else runs), leaving the close to its
    owner: a duplicate of the descriptor is shut down, so the owner's descriptor stays valid."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as dup:
        dup.shutdown(socket.SHUT_RDWR)

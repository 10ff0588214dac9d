"""``ssegate chat``: stream an answer to the terminal, on the Python client (``client.py``).

Tokens are printed as they arrive: with ``rich`` when stdout is a terminal (and a short summary on stderr),
as plain text otherwise, so ``ssegate chat "..." > answer.txt`` holds exactly the answer and a newline.
``--json`` prints every event as one JSON line ``{"id", "event", "data"}``. With no prompt the command is
an interactive conversation: it reads one question per line from stdin and keeps the history.

Ctrl-C cancels the generation on the server (``POST /v1/streams/{id}/cancel``, then the connection is
closed) and exits 130; in an interactive conversation it cancels the answer and returns to the prompt. With
``--json`` the last line is then ``{"id": null, "event": "cancelled", "data": {"stream_id": ..., "last_event_id":
..., "acknowledged": true|false}}`` (``acknowledged``: the server confirmed the cancel), so a program reading the
lines knows why they stopped.

stdout holds the answer and nothing else (notes, summaries and errors go to stderr). When its reader goes away
(``ssegate chat "..." | head -c 10``) the generation is cancelled on the server and the command exits 0,
quietly. An unreachable gateway names ``--url`` / ``SSEGATE_URL``, a 401 names ``--api-key`` /
``SSEGATE_API_KEY``.

Exit codes: 0 success, 2 client error (invalid_request, unauthorized, not_found, payload_too_large),
3 upstream or server error (upstream_error, upstream_timeout, rate_limited, overloaded, shutting_down,
generation_lost, ...), 4 the gateway cannot be reached, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import suppress
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape

from ..errors import GatewayError
from . import Client, Delta, Done, GatewayUnreachable, Reasoning, Stream, StreamEvent

__all__ = ["EXIT_CLIENT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_UPSTREAM", "exit_code", "run_chat"]

EXIT_OK = 0
EXIT_CLIENT = 2
EXIT_UPSTREAM = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130

CLIENT_CODES = frozenset({"invalid_request", "unauthorized", "not_found", "model_not_found", "payload_too_large"})
HINTS = {
    "unreachable": " (is it running? point at it with --url or SSEGATE_URL)",
    "unauthorized": " (pass a key with --api-key or SSEGATE_API_KEY)",
}
"""What to do about an error, after its message on stderr."""


class ReaderGone(Exception):
    """stdout was closed by its reader (``| head``): stop, cancel the answer, exit quietly."""


def exit_code(error: GatewayError) -> int:
    if isinstance(error, GatewayUnreachable):
        return EXIT_UNREACHABLE
    return EXIT_CLIENT if error.code in CLIENT_CODES else EXIT_UPSTREAM


class Output:
    """Where a turn goes: plain or ``rich`` text on stdout, or JSON lines; notes and errors on stderr."""

    def __init__(self, json_lines: bool) -> None:
        self.json = json_lines
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.rich = self.out.is_terminal and not json_lines
        self._t0 = 0.0
        self._t_first: float | None = None
        self._thinking = False
        self._wrote_text = False

    def begin(self) -> None:
        self._t0 = time.monotonic()
        self._t_first = None
        self._thinking = False
        self._wrote_text = False

    def event(self, ev: StreamEvent) -> None:
        if self.json:
            raw = ev.raw
            self._line({"id": raw.id, "event": raw.event, "data": orjson.loads(raw.data)})
        elif isinstance(ev, Delta):
            self._end_thinking()
            self._wrote_text = True
            if self._t_first is None:
                self._t_first = time.monotonic()
            if self.rich:
                self.out.print(ev.text, end="", markup=False)
            else:
                sys.stdout.write(ev.text)
                sys.stdout.flush()
        elif isinstance(ev, Reasoning):
            if not self._thinking:
                self._thinking = True
                self._note("[dim italic]thinking: [/]", end="")
            self._note(ev.text, end="", style="dim italic")
        elif isinstance(ev, Done):
            self._end_thinking()
            if self._wrote_text:
                self._newline()
            for call in ev.tool_calls:
                fn, call_id = call["function"], escape(call["id"])
                self._note(f"[cyan]→ tool call[/] {escape(fn['name'])}({escape(fn['arguments'])})  [dim]{call_id}[/]")
            self._summary(ev)

    def _note(self, text: str, *, end: str = "\n", style: str | None = None) -> None:
        """Reasoning and tool calls: dimmed on the terminal's stdout, else on stderr (stdout is the answer)."""
        console = self.out if self.rich else self.err
        console.print(text, end=end, style=style, markup=style is None, highlight=False)

    def _end_thinking(self) -> None:
        if self._thinking:
            self._thinking = False
            self._note("")

    def error(self, err: GatewayError, stream: Stream) -> None:
        if self.json:
            raw = stream.error_event
            if raw is not None:
                self._line({"id": raw.id, "event": raw.event, "data": orjson.loads(raw.data)})
            else:
                self._line({"id": None, "event": "error", "status": err.status or None, "data": err.body()})
        elif stream.text:
            self._newline()
        retry = " (retryable)" if err.retryable else ""
        hint = HINTS.get(err.code, "")
        self.err.print(f"[bold red]error[/] [red]{escape(err.code)}[/]: {escape(err.message)}{retry}{hint}")

    def interrupted(self, stream: Stream, acknowledged: bool) -> None:
        if self.json:
            last = f"{stream.stream_id}:{stream.last_seq}" if stream.stream_id and stream.last_seq else None
            self._line({"id": None, "event": "cancelled",
                        "data": {"stream_id": stream.stream_id, "last_event_id": last, "acknowledged": acknowledged}})
        elif stream.text:
            self._newline()
        self.err.print("[yellow]cancelled[/]")

    def _summary(self, done: Done) -> None:
        if not self.err.is_terminal:
            return
        elapsed = time.monotonic() - self._t0
        parts = [done.finish_reason, f"{done.usage.completion_tokens} tokens", f"{elapsed:.1f} s"]
        if self._t_first is not None:
            parts.append(f"first token {1000 * (self._t_first - self._t0):.0f} ms")
            gen = time.monotonic() - self._t_first
            if gen > 0 and done.usage.completion_tokens > 1:
                parts.append(f"{(done.usage.completion_tokens - 1) / gen:.0f} tokens/s")
        self.err.print("[dim]" + " · ".join(parts) + "[/]")

    def _newline(self) -> None:
        if self.rich:
            self.out.print()
        else:
            sys.stdout.write("\n")
            sys.stdout.flush()

    def _line(self, obj: Any) -> None:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
        sys.stdout.flush()


def turn(client: Client, messages: list[dict[str, str]], model: str | None, out: Output) -> tuple[int, str]:
    """One answer, streamed: the exit code and the text received. Raises ``ReaderGone`` when stdout was closed
    (after cancelling the answer: nobody reads it)."""
    out.begin()
    stream = client.stream(messages, model=model)
    try:
        for ev in stream:
            out.event(ev)
    except KeyboardInterrupt:
        with suppress(KeyboardInterrupt):
            acknowledged = stream.cancel()
            out.interrupted(stream, acknowledged)
        return EXIT_INTERRUPTED, stream.text
    except BrokenPipeError:
        with suppress(KeyboardInterrupt):
            stream.cancel()
        raise ReaderGone from None
    except GatewayError as err:
        out.error(err, stream)
        return exit_code(err), stream.text
    finally:
        stream.close()
    return EXIT_OK, stream.text


def interactive(client: Client, model: str | None, out: Output) -> int:
    """One question per line of stdin, with the conversation so far; ends at EOF (0) or Ctrl-C (130)."""
    history: list[dict[str, str]] = []
    prompt_tty = sys.stdin.isatty()
    if prompt_tty:
        out.err.print(f"[dim]ssegate chat with {client.base_url} · Ctrl-C stops an answer, Ctrl-D ends[/]")
    while True:
        try:
            if prompt_tty:
                line = out.out.input("[bold cyan]you›[/] ")
            else:
                line = sys.stdin.readline()
                if not line:
                    return EXIT_OK
        except EOFError:
            return EXIT_OK
        except KeyboardInterrupt:
            out.err.print()
            return EXIT_INTERRUPTED
        question = line.strip()
        if not question:
            continue
        history.append({"role": "user", "content": question})
        code, text = turn(client, history, model, out)
        if code in (EXIT_OK, EXIT_INTERRUPTED):
            if text:
                history.append({"role": "assistant", "content": text})
        else:
            history.pop()  # the question got no answer: ask it again, or another one
            if code == EXIT_UNREACHABLE:
                return code


def run_chat(args: argparse.Namespace) -> int:
    out = Output(json_lines=bool(args.json))
    try:
        with Client(args.url, api_key=args.api_key or None) as client:
            if args.prompt is None:
                return interactive(client, args.model, out)
            code, _ = turn(client, [{"role": "user", "content": args.prompt}], args.model, out)
            return code
    except KeyboardInterrupt:  # outside a stream (nothing to cancel)
        return EXIT_INTERRUPTED
    except (ReaderGone, BrokenPipeError):
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what the closed pipe did not take
    does not print an error at exit."""
    with suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)

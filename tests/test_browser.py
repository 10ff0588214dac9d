"""The chat page in real headless Chromium against a real gateway relaying the fake upstream.

Driven by the ``playwright`` package with Debian's ``/usr/bin/chromium``; accessibility checked by axe-core
(the npm package, installed into ``tests/npm`` by ``make npm-deps``). In CI a missing browser or axe-core is a
failure, never a skip. Screenshots of each state go to ``test-output/browser/``.

The gateway has no DETACH_GRACE_S: the page asks for a resume grace in every request (``resume_grace_s``),
which is what keeps a generation alive through a reload or a dropped connection, and what makes the Stop
test meaningful: only the page's explicit cancel can close the upstream soon.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAST
from tests.fakes import DEFAULT_DELTAS, FakeUpstream, Fault, Script
from tests.support.gateway import ROOT, GatewayProcess

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SSEGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
AXE = ROOT / "tests" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "test-output" / "browser"
WAIT_MS = 20_000  # only catches a hang
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

MESSAGES = "document.getElementById('messages')"
LAST_ANSWER = "() => [...document.querySelectorAll('#messages article.msg.assistant')].pop() ?? null"

MARKDOWN = [
    "# Release ", "notes\n\n",
    "The gateway is **fast** and *small*, with `inline code`.\n\n",
    "- first ", "item\n", "- second item\n", "- third item\n\n",
    "| name | value |\n", "|------|------:|\n", "| alpha | 1 |\n", "| beta | 22 |\n\n",
    "```python\n", "def double(x):\n", "    return x * 2\n", "```\n\n",
    "See [the docs](https://example.com/docs) for more.",
]
CODE = "def double(x):\n    return x * 2\n"


def missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing(f"chromium not found at {CHROMIUM} (apt-get install chromium, or run `make system-deps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    settings = {**FAST, "provider": "openai", "upstream_url": upstream.url, "model": "fake-model",
                "retry_attempts": 1, "shutdown_grace_s": 1}
    with GatewayProcess(settings) as gw:
        yield gw


@pytest.fixture(scope="module")
def demo_site() -> Iterator[GatewayProcess]:
    """The embedded demo model, which plays a ``/script`` message exactly (reasoning and tool calls too)."""
    with GatewayProcess({**FAST, "shutdown_grace_s": 1}) as gw:
        yield gw


class Browsing:
    """A browser context and its pages; every page's uncaught errors are collected."""

    def __init__(self, browser: Any, **options: Any) -> None:
        self.context = browser.new_context(**{"viewport": PHONE, **options})
        self.errors: list[str] = []

    def open(self, url: str) -> Any:
        pg = self.context.new_page()
        pg.set_default_timeout(WAIT_MS)
        pg.on("pageerror", lambda exc: self.errors.append(str(exc)))
        pg.goto(url)
        pg.wait_for_function("() => window.__ssegate && window.__ssegate.state.chatId")
        return pg


@pytest.fixture
def browsing(browser: Any) -> Iterator[Any]:
    made: list[Browsing] = []

    def make(**options: Any) -> Browsing:
        b = Browsing(browser, **options)
        made.append(b)
        return b

    yield make
    for b in made:
        b.context.close()
    errors = [e for b in made for e in b.errors]
    assert errors == [], f"uncaught errors in the page: {errors}"


@pytest.fixture
def page(browsing: Any, site: GatewayProcess) -> Any:
    return browsing().open(site.url + "/")


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), animations="disabled")


def ask(page: Any, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")


def answer(page: Any) -> dict[str, Any]:
    """The last answer: its markdown source, rendered text and state."""
    result: dict[str, Any] = page.evaluate(
        f"""() => {{
          const a = ({LAST_ANSWER})();
          return a && {{text: a.querySelector('.content').textContent.trim(), state: a.dataset.state,
                        source: window.__ssegate.state.text}};
        }}"""
    )
    return result


def wait_answer_state(page: Any, state: str) -> None:
    page.wait_for_function(f"() => {{ const a = ({LAST_ANSWER})(); return a && a.dataset.state === {state!r}; }}")


def wait_source_longer_than(page: Any, n: int) -> None:
    page.wait_for_function("n => window.__ssegate.state.text.length > n", arg=n)


def articles(page: Any) -> list[tuple[str, str]]:
    """(role, state) of every message on screen."""
    result: list[tuple[str, str]] = page.eval_on_selector_all(
        "#messages article.msg", "els => els.map(e => [e.classList.contains('user') ? 'user' : 'assistant', "
        "e.dataset.state || ''])"
    )
    return [tuple(r) for r in result]  # type: ignore[misc]


def titles_of(page: Any) -> list[str]:
    titles: list[str] = page.eval_on_selector_all("#chat-list .chat-title", "els => els.map(e => e.textContent)")
    return titles


def sent_messages(upstream: FakeUpstream, prompt: str, attempt: int = 1) -> list[dict[str, Any]]:
    record = upstream.wait_request(prompt, 10, attempt=attempt)
    messages: list[dict[str, Any]] = record.request_json["messages"]
    return messages


# ------------------------------------------------------------------------------------------------ streaming


def test_markdown_renders_while_the_answer_streams(page: Any, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=MARKDOWN, delay=0.08))
    ask(page, prompt)
    # the heading and the list are real elements before the answer is over
    page.wait_for_selector("#messages article.assistant .content h3")
    page.wait_for_selector("#messages article.assistant .content li")
    assert answer(page)["state"] == "streaming"
    heading = page.query_selector("#messages article.assistant .content h3")
    shot(page, "markdown-streaming")
    wait_answer_state(page, "done")
    counts = page.evaluate("""() => {
        const c = document.querySelector('#messages article.assistant .content');
        const n = (s) => c.querySelectorAll(s).length;
        return {code: n('pre code'), table: n('table'), li: n('li'), strong: n('strong'), em: n('em'),
                th: n('th'), a: n('a[target=_blank][rel="noopener noreferrer"]'), h3: n('h3')};
    }""")
    assert counts == {"code": 1, "table": 1, "li": 3, "strong": 1, "em": 1, "th": 2, "a": 1, "h3": 1}
    # a finished block is drawn once: the heading seen mid-stream is the very node on screen at the end
    assert heading.evaluate("h => h.isConnected && h.textContent") == "Release notes"
    assert page.text_content("#messages article.assistant pre code") == CODE
    assert page.text_content("#messages article.assistant td:last-child") == "1"
    state = page.evaluate("() => window.__ssegate.state")
    assert state["phase"] == "done" and state["text"] == "".join(MARKDOWN)
    assert state["lastSeq"] == len(MARKDOWN) + 2
    assert page.text_content("#ttft").endswith("ms") and page.text_content("#tps").endswith("tok/s")
    assert page.is_hidden("#stop")
    shot(page, "markdown-done")


# Reasoning, a sentence of text, then a tool call whose arguments come in pieces (the demo model's /script).
LIVE_REASONING = ["The person asks ", "about the weather ", "in Paris. ", "There is a tool ", "for that, ",
                  "so I call it."]
LIVE_ARGUMENTS = ['{"city": ', '"Paris", ', '"unit": ', '"celsius"}']
LIVE_PARTS: list[Any] = [
    *({"reasoning": r} for r in LIVE_REASONING),
    "Let me ", "look that up.",
    {"tool_call": {"id": "call_w1", "name": "get_weather"}},
    *({"arguments": a} for a in LIVE_ARGUMENTS),
]
# Every change to the last answer's view, as the person would have seen it (recorded in the page).
RECORD_TIMELINE = """() => {
    window.__timeline = [];
    const snap = () => {
      const a = [...document.querySelectorAll('#messages article.msg.assistant')].pop();
      if (!a) return;
      const r = a.querySelector('details.reasoning');
      const card = a.querySelector('.tool-call');
      const s = {state: a.dataset.state, reasoningShown: !r.hidden, label: r.querySelector('summary').textContent,
                 reasoning: r.querySelector('.reasoning-text').textContent,
                 content: a.querySelector('.content').textContent,
                 tool: card ? card.querySelector('.tool-name').textContent : null,
                 args: card ? card.querySelector('.tool-args code').textContent : null};
      const last = window.__timeline[window.__timeline.length - 1];
      if (!last || JSON.stringify(last) !== JSON.stringify(s)) window.__timeline.push(s);
    };
    new MutationObserver(snap).observe(document.getElementById('messages'),
                                       {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def test_reasoning_and_tool_calls_show_while_they_stream(browsing: Any, demo_site: GatewayProcess) -> None:
    """The reasoning card grows while the model thinks, before any answer text; the tool-call card shows the
    call's name and its arguments as they stream; at the end the reasoning collapses to "Thought for ..."."""
    page = browsing(viewport=DESKTOP).open(demo_site.url + "/")
    page.evaluate(RECORD_TIMELINE)
    ask(page, "/script " + json.dumps({"parts": LIVE_PARTS, "delay": 0.3, "finish_reason": "tool_calls"}))
    last = LAST_ANSWER
    page.wait_for_function(f"""() => {{ const a = ({last})();
        return a && a.dataset.state === 'streaming' && !a.querySelector('details.reasoning').hidden; }}""")
    assert page.text_content("#messages article.assistant details.reasoning summary") == "Thinking…"
    page.click("#messages article.assistant details.reasoning summary")  # open it, as a curious person would
    page.wait_for_function(f"""() => {{ const a = ({last})();
        const args = a.querySelector('.tool-call .tool-args code');
        return a.dataset.state === 'streaming' && args && args.textContent.includes('Paris'); }}""")
    shot(page, "live-reasoning-tools")
    wait_answer_state(page, "done")

    full_reasoning, full_args = "".join(LIVE_REASONING), "".join(LIVE_ARGUMENTS)
    timeline: list[dict[str, Any]] = page.evaluate("() => window.__timeline")
    live = [s for s in timeline if s["state"] == "streaming"]
    # the reasoning card appeared and grew, piece by piece, before any answer text
    thinking = [s["reasoning"] for s in live if s["reasoning"] and not s["content"]]
    assert len(set(thinking)) >= 3, timeline
    assert all(b.startswith(a) for a, b in pairwise(thinking))
    assert all(s["reasoningShown"] and s["label"] == "Thinking…" for s in live if s["reasoning"] and not s["content"])
    assert thinking[0] != full_reasoning
    first_text = next(s for s in live if s["content"])
    assert first_text["reasoning"] == full_reasoning and first_text["label"].startswith("Thought for")
    # the tool-call card: its name, then its arguments growing, all before the answer was over
    calling = [s for s in live if s["tool"] is not None]
    assert calling and all(s["tool"] == "get_weather" for s in calling)
    partial = {s["args"] for s in calling if s["args"] != full_args}
    assert any(a and full_args.startswith(a) for a in partial), calling
    # and how it all ended
    assert timeline[-1]["state"] == "done"
    assert re.fullmatch(r"Thought for (a moment|\d+ s)", page.text_content(
        "#messages article.assistant details.reasoning summary") or "")
    assert page.text_content("#messages article.assistant .reasoning-text") == full_reasoning
    assert answer(page)["text"] == "Let me look that up."
    assert page.eval_on_selector_all("#messages .tool-call .tool-name", "els => els.map(e => e.textContent)") == [
        "get_weather"]
    args = page.text_content("#messages .tool-call .tool-args code") or ""
    assert json.loads(args) == {"city": "Paris", "unit": "celsius"} and "\n" in args  # pretty once complete
    state = page.evaluate("() => window.__ssegate.state")
    assert state["finishReason"] == "tool_calls" and state["phase"] == "done"


def test_copy_puts_the_code_on_the_clipboard(browsing: Any, site: GatewayProcess, upstream: FakeUpstream) -> None:
    b = browsing(viewport=DESKTOP)
    b.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = b.open(site.url + "/")
    ask(page, upstream.script(Script(deltas=MARKDOWN)))
    wait_answer_state(page, "done")
    page.click("#messages article.assistant button.copy-code")
    page.wait_for_function("() => document.querySelector('button.copy-code').textContent === 'Copied'")
    assert page.evaluate("() => navigator.clipboard.readText()") == CODE
    page.click("#messages article.assistant .msg-actions button[data-action=copy]")
    page.wait_for_function("() => document.querySelector('.msg-actions [data-action=copy]').textContent === 'Copied'")
    assert page.evaluate("() => navigator.clipboard.readText()") == "".join(MARKDOWN)


HOSTILE = [
    "Links: [x](javascript:alert(1)) [y](JaVaScRiPt:window.__xss=1) [z](data:text/html;base64,PHNjcmlwdD4=) ",
    "[e](&#106;avascript:window.__xss=2) [v](vbscript:msgbox(1)) <javascript:window.__xss=3>\n\n",
    "Images: ![leak](LEAK_URL) ![bad](javascript:window.__xss=4) ![d](data:image/svg+xml,<svg onload=alert(1)>)\n\n",
    "Raw: <img src=x onerror=window.__xss=5> <script>window.__xss=6</script> <iframe src=javascript:1></iframe>\n\n",
    '<a href="javascript:window.__xss=7">click</a> <svg><script>window.__xss=8</script></svg> ',
    "&lt;b&gt;entity&lt;/b&gt; &#60;script&#62;window.__xss=9&#60;/script&#62;\n\n",
    "```html\n<script>window.__xss=10</script>\n```\n\n",
    "Fine: [ok](https://example.com/?a=1&b=2) and <https://auto.example/> and www.example.org.",
]


def test_hostile_markdown_runs_no_script(page: Any, site: GatewayProcess, upstream: FakeUpstream) -> None:
    """Model output is data: no markup or URL in it may run code, load anything or leave a live handler."""
    leak = f"{site.url}/leak-{os.getpid()}.png"
    deltas = [d.replace("LEAK_URL", leak) for d in HOSTILE]
    requested: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    ask(page, upstream.script(Script(deltas=deltas, delay=0.01)))
    wait_answer_state(page, "done")
    found = page.evaluate("""() => {
        const root = document.querySelector('#messages article.assistant .content');
        const all = [...root.querySelectorAll('*')];
        return {
          dangerous: all.filter(e => /^(script|img|iframe|object|embed|svg|math|style|form|input|link|meta|base)$/i
                                     .test(e.tagName)).map(e => e.tagName),
          handlers: all.flatMap(e => [...e.attributes].filter(a => /^on/i.test(a.name)).map(a => a.name)),
          styles: all.map(e => e.getAttribute('style')).filter(s => s && !/^text-align:(left|right|center)$/.test(s)),
          hrefs: [...root.querySelectorAll('[href], [src], [action], [formaction]')]
                   .map(e => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action')),
          links: [...root.querySelectorAll('a')].map(a => [a.target, a.rel]),
          imageLinks: [...root.querySelectorAll('a.image-link')].map(a => [a.textContent, a.getAttribute('href')]),
          text: root.textContent,
          xss: window.__xss,
        };
    }""")
    assert found["dangerous"] == [] and found["handlers"] == [] and found["styles"] == []
    assert found["hrefs"] and all(h.startswith(("https://", "http://", "mailto:")) for h in found["hrefs"]), found
    assert set(map(tuple, found["links"])) == {("_blank", "noopener noreferrer")}
    assert found["imageLinks"] == [["Image: leak", leak]]  # shown as a link, never fetched
    assert found["xss"] is None and dialogs == []
    assert not any("leak-" in url for url in requested)
    # what could not be a safe link or element is shown as the text it was
    for text in ["[x](javascript:alert(1))", "<script>window.__xss=6</script>", "<b>entity</b>",
                 '<a href="javascript:window.__xss=7">click</a>']:
        assert text in found["text"]
    assert page.text_content("#messages article.assistant pre code") == "<script>window.__xss=10</script>\n"
    shot(page, "hostile-markdown")


# ------------------------------------------------------------------------------------------------ resume


def test_a_reload_mid_answer_continues_the_same_generation(page: Any, upstream: FakeUpstream) -> None:
    deltas = [f"d{i:02d} " for i in range(60)]
    full = "".join(deltas)
    prompt = upstream.script(Script(deltas=deltas, delay=0.05))
    with page.expect_request("**/v1/chat/stream") as request:
        ask(page, prompt)
    assert request.value.post_data_json["resume_grace_s"] == 30  # what keeps the generation alive
    wait_source_longer_than(page, 4 * 10)  # ten deltas in
    before = page.evaluate("() => window.__ssegate.state")
    assert before["phase"] == "streaming" and before["lastSeq"] < len(deltas) + 2
    page.reload()
    page.wait_for_function("() => window.__ssegate.phases.includes('reconnecting')")
    shot(page, "after-reload-reconnecting")
    wait_answer_state(page, "done")
    after = page.evaluate("() => window.__ssegate")
    assert answer(page)["text"] == full.strip() and after["state"]["text"] == full  # no duplicate, no gap
    assert after["state"]["streamId"] == before["streamId"]
    assert "cancelled" not in after["phases"]
    assert articles(page) == [("user", ""), ("assistant", "done")]
    assert len(upstream.records(prompt)) == 1  # the same generation, not a new one


class DroppingProxy:
    """Loopback TCP between the browser and the gateway; ``drop()`` cuts every connection and refuses new
    ones (they are accepted and closed at once) until ``restore()``: a network outage, as the page sees it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.down = threading.Event()
        self.lock = threading.Lock()
        self.socks: list[socket.socket] = []
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                self.refused += 1
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.socks += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> None:
        self.down.set()
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.drop()
        self.listener.close()


def test_a_dropped_network_mid_answer_reconnects_and_continues(
    browsing: Any, site: GatewayProcess, upstream: FakeUpstream
) -> None:
    proxy = DroppingProxy(site.port)
    try:
        page = browsing().open(proxy.url + "/")
        deltas = [f"n{i:02d} " for i in range(60)]
        prompt = upstream.script(Script(deltas=deltas, delay=0.05))
        ask(page, prompt)
        wait_source_longer_than(page, 4 * 8)
        proxy.drop()
        page.wait_for_function("() => window.__ssegate.state.phase === 'reconnecting'")
        assert "Reconnecting" in page.text_content("#status")
        shot(page, "network-dropped")
        page.wait_for_function("() => window.__ssegate.state.reconnects >= 2")  # a reconnect failed: still down
        assert proxy.refused >= 1
        proxy.restore()
        wait_answer_state(page, "done")
        ssegate = page.evaluate("() => window.__ssegate")
        assert ssegate["state"]["text"] == "".join(deltas)
        assert "cancelled" not in ssegate["phases"] and "error" not in ssegate["phases"]
        assert len(upstream.records(prompt)) == 1
    finally:
        proxy.close()


# ------------------------------------------------------------------------------------------------ stop


def test_stop_cancels_the_upstream(page: Any, upstream: FakeUpstream) -> None:
    deltas = [f"t{i} " for i in range(400)]
    prompt = upstream.script(Script(deltas=deltas, delay=0.05))
    ask(page, prompt)
    wait_source_longer_than(page, 8)
    assert page.is_visible("#stop")
    page.click("#stop")
    record = upstream.wait_closed(prompt, 10)  # well before the 30 s resume grace: the cancel did it
    assert record.closed_at is not None and record.deltas_sent < len(deltas)
    wait_answer_state(page, "cancelled")
    assert page.evaluate("() => window.__ssegate.state.phase") == "cancelled"
    assert "Stopped" in page.text_content("#messages article.assistant .notice")
    assert page.is_hidden("#stop") and page.is_enabled("#send")
    assert page.evaluate("() => document.activeElement.id") == "prompt"
    shot(page, "stopped")


def test_escape_closes_the_open_popover_then_stops_the_answer(page: Any, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=[f"e{i} " for i in range(400)], delay=0.05))
    ask(page, prompt)
    wait_source_longer_than(page, 8)
    page.click("#settings summary")
    assert page.evaluate("() => document.getElementById('settings').open")
    page.keyboard.press("Escape")  # first the popover
    assert not page.evaluate("() => document.getElementById('settings').open")
    assert page.evaluate("() => window.__ssegate.state.phase") == "streaming"
    page.keyboard.press("Escape")  # then the answer
    upstream.wait_closed(prompt, 10)
    wait_answer_state(page, "cancelled")
    assert page.evaluate("() => document.activeElement.id") == "prompt"


# ------------------------------------------------------------------------------------------------ conversations


def test_conversations_survive_a_new_page(browsing: Any, site: GatewayProcess, upstream: FakeUpstream) -> None:
    first = browsing(viewport=DESKTOP)
    page = first.open(site.url + "/")
    p1 = upstream.script(Script(deltas=["Answer ", "one."]))
    ask(page, p1)
    wait_answer_state(page, "done")
    page.click("#new-chat")
    assert articles(page) == []
    p2 = upstream.script(Script(deltas=["Answer ", "two."]))
    ask(page, p2)
    wait_answer_state(page, "done")
    assert titles_of(page) == [p2, p1]
    # rename the first chat
    page.click(f"#chat-list li:has-text('{p1}') button[data-action=rename]")
    page.fill("#chat-list input.rename-input", "Renamed chat")
    page.press("#chat-list input.rename-input", "Enter")
    page.wait_for_selector("#chat-list .chat-title:text-is('Renamed chat')")

    # a new context with the same storage: a new tab after a restart
    second = browsing(viewport=DESKTOP, storage_state=first.context.storage_state())
    again = second.open(site.url + "/")
    assert titles_of(again) == [p2, "Renamed chat"]
    assert answer(again)["text"] == "Answer two."  # the chat open last
    again.click("#chat-list li:has-text('Renamed chat') .chat-open")
    again.wait_for_function("() => document.querySelector('#messages article.assistant')?.textContent.includes('one')")
    assert articles(again) == [("user", ""), ("assistant", "done")]
    assert again.text_content("#messages article.user .content") == p1
    shot(again, "conversations")
    # delete the other chat: two presses (the first asks)
    delete = f"#chat-list li:has-text('{p2}') button[data-action=delete]"
    again.click(delete)
    again.click(delete)
    again.wait_for_function("() => document.querySelectorAll('#chat-list li').length === 1")
    assert titles_of(again) == ["Renamed chat"]


def test_an_answer_keeps_coming_while_another_chat_is_open(page: Any, upstream: FakeUpstream) -> None:
    slow = [f"s{i:02d} " for i in range(40)]
    p1 = upstream.script(Script(deltas=slow, delay=0.05))
    ask(page, p1)
    wait_source_longer_than(page, 8)
    first_chat = page.evaluate("() => window.__ssegate.state.chatId")
    page.click("#sidebar-toggle")
    page.click("#new-chat")
    p2 = upstream.script(Script(deltas=["Quick ", "answer."]))
    ask(page, p2)  # a second chat answers while the first one is still being written
    wait_answer_state(page, "done")
    assert answer(page)["text"] == "Quick answer."
    page.click("#sidebar-toggle")
    page.click(f"#chat-list li[data-id=\"{first_chat}\"] .chat-open")
    wait_answer_state(page, "done")
    assert answer(page)["source"] == "".join(slow)
    assert len(upstream.records(p1)) == 1


def test_a_reload_before_the_stream_started_leaves_a_retry_not_a_stuck_answer(
    browsing: Any, make_gateway: Any, upstream: FakeUpstream
) -> None:
    """The server holds its response until the first output (or COMMIT_TIMEOUT_S): a page reloaded before
    that never learned the stream id, so there is nothing to resume; it must say so and offer Retry."""
    patient = make_gateway({"provider": "openai", "upstream_url": upstream.url, "model": "fake-model",
                            "commit_timeout_s": 30, "first_token_timeout_s": 60})
    page = browsing().open(patient.url + "/")
    prompt = upstream.script(Script(deltas=["Eventually."], ttft=4))
    ask(page, prompt)
    upstream.wait_request(prompt, 10)
    assert page.evaluate("() => window.__ssegate.state.phase") == "connecting"
    page.reload()
    wait_answer_state(page, "error")
    assert "reloaded before the answer started" in page.text_content("#messages article.assistant .notice")
    page.click("#messages article.assistant button[data-action=retry]")
    wait_answer_state(page, "done")
    assert articles(page) == [("user", ""), ("assistant", "done")]


def test_regenerate_and_edit(page: Any, upstream: FakeUpstream) -> None:
    p1 = upstream.script(Script(deltas=["First ", "answer."]))
    ask(page, p1)
    wait_answer_state(page, "done")
    page.click("#messages article.assistant button[data-action=regenerate]")
    upstream.wait_request(p1, 10, attempt=2)
    wait_answer_state(page, "done")
    assert articles(page) == [("user", ""), ("assistant", "done")]
    assert sent_messages(upstream, p1, attempt=2) == [{"role": "user", "content": p1}]

    # edit the question: everything after it goes, and the edited question is asked
    p2 = upstream.script(Script(deltas=["Edited ", "answer."]))
    page.click("#messages article.user button[data-action=edit]")
    page.fill("#messages article.user form.editor textarea", p2)
    page.click("#messages article.user form.editor button[type=submit]")
    upstream.wait_request(p2, 10)
    wait_answer_state(page, "done")
    assert articles(page) == [("user", ""), ("assistant", "done")]
    assert page.text_content("#messages article.user .content") == p2
    assert answer(page)["text"] == "Edited answer."
    assert sent_messages(upstream, p2) == [{"role": "user", "content": p2}]
    shot(page, "edited")


# ------------------------------------------------------------------------------------------------ failures


def test_an_error_before_the_first_token_leaves_no_debris(page: Any, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["Second ", "try ", "works."], fail_attempts=1, fail_status=503))
    ask(page, prompt)
    wait_answer_state(page, "error")
    # the error in place of the answer: a message, Retry and Edit, no empty bubble
    error = page.locator("#messages article.assistant")
    assert error.locator(".notice").is_visible() and error.locator(".content").is_hidden()
    assert error.locator("button[data-action=retry]").is_visible()
    assert error.locator("button[data-action=edit-previous]").is_visible()
    assert page.evaluate("() => window.__ssegate.state.error.code") in {"upstream_error", "overloaded"}
    shot(page, "error-before-first-token")
    error.locator("button[data-action=retry]").click()
    wait_answer_state(page, "done")
    assert articles(page) == [("user", ""), ("assistant", "done")]
    assert answer(page)["text"] == "Second try works."
    assert sent_messages(upstream, prompt, attempt=2) == [{"role": "user", "content": prompt}]


def test_a_failure_mid_answer_keeps_the_partial_answer(page: Any, upstream: FakeUpstream) -> None:
    deltas = ["The ", "answer ", "starts ", "and ", "then ", "breaks"]
    # the second turn (the hidden "Continue" request carries one assistant message) plays the rest
    prompt = upstream.script(Script(turns=[Script(deltas=deltas, delay=0.05, fault=Fault.RESET, fault_after=3),
                                           Script(deltas=DEFAULT_DELTAS)]))
    ask(page, prompt)
    wait_answer_state(page, "interrupted")
    assert answer(page)["text"] == "The answer starts"
    notice = page.text_content("#messages article.assistant .notice") or ""
    assert notice.startswith("Interrupted: The model provider returned an error.")
    last = page.locator("#messages article.assistant")
    assert last.locator("button[data-action=retry]").is_visible()
    assert last.locator("button[data-action=continue]").is_visible()
    shot(page, "interrupted")
    # Continue: the partial answer goes upstream as the assistant's turn, and the rest is appended to it
    last.locator("button[data-action=continue]").click()
    wait_answer_state(page, "done")
    assert answer(page)["source"] == "The answer starts " + "".join(DEFAULT_DELTAS)
    continued = next(r.request_json["messages"] for r in reversed(upstream.records())
                     if r.request_json["messages"][0]["content"] == prompt and len(r.request_json["messages"]) == 3)
    assert continued[:2] == [{"role": "user", "content": prompt},
                             {"role": "assistant", "content": "The answer starts "}]
    assert continued[2]["role"] == "user" and "Continue" in continued[2]["content"]
    assert articles(page) == [("user", ""), ("assistant", "done")]


# ------------------------------------------------------------------------------------------------ page


def test_focus_announcements_and_labels(page: Any, upstream: FakeUpstream) -> None:
    assert page.evaluate("() => document.activeElement.id") == "prompt"
    page.evaluate("""() => {
        window.__announced = [];
        new MutationObserver(records => {
          for (const r of records) for (const n of r.addedNodes) window.__announced.push(n.textContent);
        }).observe(document.getElementById('announcer'), {childList: true, subtree: true, characterData: true});
    }""")
    words = [f"w{i} " for i in range(30)]
    deltas = ["First ", "sentence ", "here. ", *words, "end. ", "Last ", "bit"]
    ask(page, upstream.script(Script(deltas=deltas, delay=0.02)))
    wait_answer_state(page, "done")
    page.wait_for_function("() => window.__announced.includes('Last bit')")
    announced = page.evaluate("() => window.__announced")
    assert announced[0].startswith("First sentence here.")
    assert announced[-1] == "Last bit" and len(announced) <= 4 < len(deltas)
    live = page.eval_on_selector_all("[aria-live], [role=status], [role=log], [role=alert], output",
                                     "els => els.map(e => e.id)")
    assert live == ["announcer"]  # statistics, status and messages are not live regions
    labels = page.eval_on_selector_all(
        "#messages article", "els => els.map(e => document.getElementById(e.getAttribute('aria-labelledby'))"
        ".textContent)"
    )
    assert labels == ["You said", "ssegate answered"]


def test_jump_to_latest(page: Any, upstream: FakeUpstream) -> None:
    deltas = [f"Line {i} of a long answer.\n\n" for i in range(80)]
    ask(page, upstream.script(Script(deltas=deltas, delay=0.06)))
    page.wait_for_function(f"() => {{ const m = {MESSAGES}; return m.scrollHeight > 2 * m.clientHeight; }}")
    assert page.is_hidden("#jump")
    page.evaluate("() => { document.getElementById('messages').scrollTop = 0; }")
    page.wait_for_selector("#jump", state="visible")
    top = page.evaluate("() => document.getElementById('messages').scrollTop")
    wait_source_longer_than(page, len(answer(page)["source"]) + 40)
    assert page.evaluate("() => document.getElementById('messages').scrollTop") == top  # left where the person is
    shot(page, "jump-to-latest")
    page.click("#jump")
    page.wait_for_selector("#jump", state="hidden")
    at_bottom = f"() => {{ const m = {MESSAGES}; return m.scrollHeight - m.scrollTop - m.clientHeight < 60; }}"
    assert page.evaluate(at_bottom)
    wait_answer_state(page, "done")
    assert page.evaluate(at_bottom)  # followed the rest of the answer


def test_dark_mode_follows_the_system_and_the_toggle_is_remembered(browsing: Any, site: GatewayProcess) -> None:
    b = browsing(color_scheme="dark")
    page = b.open(site.url + "/")
    background = "() => getComputedStyle(document.body).backgroundColor"
    assert page.get_attribute("#theme", "aria-pressed") == "true"
    dark = page.evaluate(background)
    page.click("#theme")
    assert page.get_attribute("#theme", "aria-pressed") == "false"
    assert page.evaluate(background) != dark
    again = b.open(site.url + "/")  # another tab: the choice is remembered over the system's
    assert again.get_attribute("html", "data-theme") == "light"
    assert again.get_attribute("#theme", "aria-pressed") == "false"


def test_the_model_list_comes_from_the_server(page: Any, upstream: FakeUpstream) -> None:
    page.wait_for_function("() => document.querySelector('#model option').value !== ''")
    options = page.eval_on_selector_all("#model option", "els => els.map(e => e.value)")
    assert options == ["fake-model"]
    assert page.is_disabled("#model")  # one model: nothing to choose
    prompt = upstream.script(Script(deltas=["ok"]))
    ask(page, prompt)
    record = upstream.wait_request(prompt, 10)
    assert record.request_json["model"] == "fake-model"


def test_the_model_menu_offers_no_wildcard_sends_the_choice_and_remembers_it(
    browsing: Any, make_gateway: Any, tmp_path: Path
) -> None:
    """``GET /v1/models`` lists a routing file's wildcards as written (``local/*``), but asking for that name is a
    404: the menu offers only the exact names, sends the one picked, and keeps it across a reload and a new tab."""
    path = tmp_path / "models.toml"
    path.write_text("".join(f'[[models]]\nname = "{n}"\nprovider = "demo"\n\n' for n in ("fast", "smart", "local/*")))
    gw = make_gateway({"config": str(path), "demo_ttft_s": 0.05, "demo_tokens_per_s": 400, "shutdown_grace_s": 1})
    listed = [m["id"] for m in httpx.get(gw.url + "/v1/models", timeout=10).json()["data"]]
    assert listed == ["fast", "smart", "local/*"]
    b = browsing(viewport=DESKTOP)
    page = b.open(gw.url + "/")
    filled = "() => document.querySelector('#model option').value !== ''"
    page.wait_for_function(filled)
    assert page.eval_on_selector_all("#model option", "els => els.map(e => e.value)") == ["fast", "smart"]
    assert page.is_enabled("#model") and page.input_value("#model") == "fast"

    page.select_option("#model", "smart")
    with page.expect_request("**/v1/chat/stream") as request, page.expect_response("**/v1/chat/stream") as response:
        ask(page, "Which model answers?")
    assert request.value.post_data_json["model"] == "smart"
    assert response.value.status == 200 and response.value.headers["x-ssegate-model"] == "smart"
    wait_answer_state(page, "done")
    assert page.evaluate("() => window.__ssegate.state.model") == "smart"

    page.reload()
    page.wait_for_function("() => window.__ssegate && window.__ssegate.state.chatId")
    other_tab = b.open(gw.url + "/")
    for again in (page, other_tab):
        again.wait_for_function(filled)
        assert again.input_value("#model") == "smart"
    with page.expect_request("**/v1/chat/stream") as request:
        ask(page, "And now?")
    assert request.value.post_data_json["model"] == "smart"
    wait_answer_state(page, "done")


# ------------------------------------------------------------------------------------------------ looks and a11y


def axe(page: Any) -> list[dict[str, Any]]:
    if not AXE.exists():
        missing(f"axe-core not installed at {AXE} (run `make npm-deps`)")
    if not page.evaluate("() => Boolean(window.axe)"):
        page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"]]


def build_showcase(page: Any, upstream: FakeUpstream) -> None:
    """A conversation with every kind of message: markdown, an interrupted answer, an error in place."""
    ask(page, upstream.script(Script(deltas=MARKDOWN)))
    wait_answer_state(page, "done")
    ask(page, upstream.script(Script(deltas=["A partial ", "answer ", "that ", "breaks"], fault=Fault.RESET,
                                     fault_after=2)))
    wait_answer_state(page, "interrupted")
    ask(page, upstream.script(Script(deltas=["x"], status=503)))
    wait_answer_state(page, "error")


# A conversation as the page stores it, with reasoning and tool calls (CONTRACT §3.1): how a finished one looks
# when it is opened again, at every size and in both schemes, and that it passes axe. How they look while they
# stream from the server: test_reasoning_and_tool_calls_show_while_they_stream.
PARTS_CHAT = {
    "id": "partsdemo01", "title": "Weather in Paris", "created": 1, "updated": 1,
    "messages": [
        {"id": "u1", "role": "user", "content": "What's the weather in Paris, and the time in Tokyo?"},
        {"id": "a1", "role": "assistant", "state": "done", "model": "fake-model", "finishReason": "tool_calls",
         "reasoning": "Two questions: the weather in Paris and the time in Tokyo. There is a tool for each, "
                      "so I call both at once.",
         "reasoningStart": 0, "reasoningMs": 4200, "content": "Let me look both up.",
         "tool_calls": [
             {"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}},
             {"id": "call_2", "type": "function",
              "function": {"name": "get_time", "arguments": '{"tz": "Asia/Tokyo"}'}},
         ],
         "usage": {"completion_tokens": 41}, "streamId": "s1", "lastSeq": 9},
    ],
}


def store_chat(page: Any, chat: dict[str, Any]) -> None:
    page.evaluate("""chat => {
        localStorage.setItem('ssegate.chat.' + chat.id, JSON.stringify(chat));
        const index = JSON.parse(localStorage.getItem('ssegate.chats') || '[]');
        index.push({id: chat.id, title: chat.title, updated: chat.updated});
        localStorage.setItem('ssegate.chats', JSON.stringify(index));
    }""", chat)


def open_chat(page: Any, chat_id: str) -> None:
    if page.is_visible("#sidebar-toggle"):
        page.click("#sidebar-toggle")
    page.click(f"#chat-list li[data-id=\"{chat_id}\"] .chat-open")
    page.wait_for_function("id => window.__ssegate.state.chatId === id", arg=chat_id)


def test_axe_finds_nothing_serious_and_screenshots(browsing: Any, site: GatewayProcess, upstream: FakeUpstream
                                                    ) -> None:
    report: dict[str, list[dict[str, Any]]] = {}
    storage: Any = None
    for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        for scheme in ("light", "dark"):
            b = browsing(viewport=viewport, color_scheme=scheme,
                         **({"storage_state": storage} if storage is not None else {}))
            page = b.open(site.url + "/")
            if storage is None:
                report["empty"] = axe(page)
                shot(page, "empty-desktop-light")
                build_showcase(page, upstream)
                store_chat(page, PARTS_CHAT)
                storage = b.context.storage_state()
                page.reload()
            page.wait_for_selector("#messages article.assistant[data-state=error]")
            page.evaluate(f"() => {{ const m = {MESSAGES}; m.scrollTop = m.scrollHeight; }}")
            name = f"{size_name}-{scheme}"
            shot(page, name)
            report[name] = axe(page)
            if size_name == "phone":
                page.click("#sidebar-toggle")
                page.wait_for_selector("#sidebar .chat-open", state="visible")
                shot(page, f"{name}-chats")
                report[f"{name}-chats"] = axe(page)
                page.keyboard.press("Escape")
                page.wait_for_selector("#sidebar .chat-open", state="hidden")
            open_chat(page, PARTS_CHAT["id"])
            page.click("#messages article.assistant details.reasoning summary")
            assert page.text_content("#messages article.assistant details.reasoning summary") == "Thought for 4 s"
            tools = page.eval_on_selector_all("#messages .tool-call .tool-name", "els => els.map(e => e.textContent)")
            assert tools == ["get_weather", "get_time"]
            shot(page, f"{name}-reasoning-tools")
            report[f"{name}-reasoning-tools"] = axe(page)
    (SHOTS / "axe.json").write_text(json.dumps(report, indent=2))
    serious = {k: [v for v in vs if v["impact"] in ("serious", "critical")] for k, vs in report.items()}
    assert all(not v for v in serious.values()), serious

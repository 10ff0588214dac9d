"""The chat page in real headless Chromium against a real gateway relaying the fake upstream.

Driven by the ``playwright`` package with Debian's ``/usr/bin/chromium``. In CI a missing browser is a
failure, never a skip. Each state is saved as a screenshot under ``test-output/browser/``.

The gateway has a resume grace (``DETACH_GRACE_S``), as a deployment serving this page should: a reload
closes the page's connection, and the generation must survive until the reloaded page resumes it. The
grace also makes the Stop test meaningful: only the page's cancel request can close the upstream soon.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST
from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import ROOT, GatewayProcess

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SSEGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = ROOT / "test-output" / "browser"
WAIT_MS = 20_000  # only catches a hang

LAST_ANSWER = "() => [...document.querySelectorAll('#messages .msg.assistant')].pop() ?? null"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        message = f"chromium not found at {CHROMIUM} (apt-get install chromium, or run `make system-deps`)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    settings = {**FAST, "provider": "openai", "upstream_url": upstream.url, "model": "fake-model",
                "detach_grace_s": 30, "shutdown_grace_s": 1}
    with GatewayProcess(settings) as gw:
        yield gw


@pytest.fixture
def page(browser: Any, site: GatewayProcess) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 420, "height": 800})  # phone-sized
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(site.url + "/")
    pg.wait_for_function("() => window.__ssegate && window.__ssegate.state.phase === 'idle'")
    yield pg
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def ask(page: Any, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#send")


def answer(page: Any) -> dict[str, Any]:
    """The last assistant bubble: its text and data-state."""
    result: dict[str, Any] = page.evaluate(
        f"() => {{ const b = ({LAST_ANSWER})(); return b && {{text: b.textContent, state: b.dataset.state}}; }}"
    )
    return result


def wait_answer_state(page: Any, state: str) -> None:
    page.wait_for_function(f"() => {{ const b = ({LAST_ANSWER})(); return b && b.dataset.state === {state!r}; }}")


def wait_answer_longer_than(page: Any, n: int) -> None:
    page.wait_for_function(
        f"n => {{ const b = ({LAST_ANSWER})(); return b && b.textContent.length > n; }}", arg=n
    )


def test_the_answer_grows_token_by_token(page: Any, upstream: FakeUpstream) -> None:
    deltas = [f"word{i:02d} " for i in range(40)]
    ask(page, upstream.script(Script(deltas=deltas, delay=0.05)))
    seen: list[tuple[int, str]] = []
    length = 0
    for _ in range(4):  # four observations, each longer than the last, all before the end
        wait_answer_longer_than(page, length)
        now = answer(page)
        length = len(now["text"])
        seen.append((length, now["state"]))
    assert [s for _, s in seen] == ["streaming"] * 4, seen
    assert "".join(deltas).startswith(answer(page)["text"])
    shot(page, "streaming")
    wait_answer_state(page, "done")
    assert answer(page)["text"] == "".join(deltas)
    state = page.evaluate("() => window.__ssegate.state")
    assert state["phase"] == "done" and state["text"] == "".join(deltas)
    assert state["streamId"] and state["lastSeq"] == len(deltas) + 2
    assert page.text_content("#ttft").endswith("ms") and page.text_content("#tps").endswith("tok/s")
    assert page.is_hidden("#stop") and page.is_hidden("#error")
    shot(page, "done")


def test_stop_ends_the_generation(page: Any, upstream: FakeUpstream) -> None:
    deltas = [f"t{i} " for i in range(400)]
    prompt = upstream.script(Script(deltas=deltas, delay=0.05))
    ask(page, prompt)
    wait_answer_longer_than(page, 8)
    assert page.is_visible("#stop")
    page.click("#stop")
    record = upstream.wait_closed(prompt, 10)  # well before the 30 s resume grace: the cancel did it
    assert record.closed_at is not None
    wait_answer_state(page, "cancelled")
    text = answer(page)["text"]
    assert text and "".join(deltas).startswith(text) and len(text) < len("".join(deltas))
    assert page.evaluate("() => window.__ssegate.state.phase") == "cancelled"
    assert page.is_hidden("#stop") and page.is_enabled("#send")
    shot(page, "stopped")


def test_an_upstream_failure_mid_answer_shows_the_error(page: Any, upstream: FakeUpstream) -> None:
    deltas = ["The ", "answer ", "starts ", "and ", "then ", "breaks"]
    ask(page, upstream.script(Script(deltas=deltas, delay=0.05, fault=Fault.RESET, fault_after=3)))
    wait_answer_state(page, "error")
    assert answer(page)["text"] == "The answer starts "
    assert page.is_visible("#error")
    message = page.text_content("#error") or ""
    assert "The model provider returned an error." in message
    state = page.evaluate("() => window.__ssegate.state")
    assert state["phase"] == "error" and state["error"]["code"] == "upstream_error"
    assert page.is_visible("#retry")  # upstream_error is retryable
    shot(page, "upstream-error")


def test_a_reload_mid_answer_ends_with_the_full_answer(page: Any, upstream: FakeUpstream) -> None:
    deltas = [f"d{i:02d} " for i in range(60)]
    full = "".join(deltas)
    ask(page, upstream.script(Script(deltas=deltas, delay=0.05)))
    wait_answer_longer_than(page, 4 * 10)  # ten deltas in
    shot(page, "before-reload")
    before = page.evaluate("() => window.__ssegate.state")
    assert before["phase"] == "streaming" and before["lastSeq"] < len(deltas) + 2
    page.reload()
    wait_answer_state(page, "done")
    after = page.evaluate("() => window.__ssegate.state")
    assert answer(page)["text"] == full  # no duplicate, no gap
    assert after["text"] == full and after["streamId"] == before["streamId"]
    assert page.eval_on_selector_all("#messages .msg.assistant", "els => els.length") == 1
    assert page.eval_on_selector_all("#messages .msg.user", "els => els.length") == 1
    shot(page, "after-reload")


def test_model_output_is_text_never_html(page: Any, upstream: FakeUpstream) -> None:
    deltas = ["Look: ", "<img src=x onerror=window.__xss=1>", " and ", "<script>window.__xss=2</script>",
              " <b>bold?</b>"]
    ask(page, upstream.script(Script(deltas=deltas)))
    wait_answer_state(page, "done")
    assert answer(page)["text"] == "".join(deltas)
    assert page.eval_on_selector_all("#messages img, #messages script, #messages b", "els => els.length") == 0
    assert page.evaluate("() => window.__xss") is None
    shot(page, "literal-html")

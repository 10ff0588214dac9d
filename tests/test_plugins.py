"""A third-party provider found through the ``ssegate.providers`` entry point (src/ssegate/plugins.py), streamed from.

The plugin is built here the way an installed package looks to ``importlib.metadata``: a module and a
``*.dist-info`` directory whose ``entry_points.txt`` declares ``shout = ssegate_shout:factory``, in a temporary
directory put on the gateway process's ``PYTHONPATH``. Nothing else tells ssegate about it: ``SSEGATE_PROVIDER=shout``
is accepted only because the entry point is found (the control without it refuses to start), and the plugin's parts
(reasoning, text, a tool call, provider data) take the production path to the native stream and the OpenAI endpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import FAST
from tests.support.gateway import GatewayProcess, post_events

PLUGIN = '''
"""ssegate-shout: a provider that answers with the last user message in capitals (a third-party plugin)."""

from __future__ import annotations

import asyncio

from ssegate.errors import InvalidRequest
from ssegate.parts import Finish, Reasoning, ToolCallDelta, ToolCallStart, Usage


class ShoutProvider:
    name = "shout"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.label = f"shout {base_url}"

    def check_request(self, request):
        if request.temperature is not None:
            raise InvalidRequest("temperature: not supported by the shout upstream (it is always loud)")

    async def stream(self, request, sink):
        words = str(request.messages[-1]["content"]).upper().split()
        sink.emit(Reasoning("How loud? "))
        sink.emit(Reasoning("Very."))
        for word in words:
            await asyncio.sleep(0.005)  # the pace of a real upstream
            sink.alive()
            sink.emit(word + " ")
        usage = Usage(len(words), len(words) + 2)
        if not request.tools:
            return Finish("stop", usage)
        sink.emit(ToolCallStart(0, "call_shout", request.tools[0]["function"]["name"]))
        sink.emit(ToolCallDelta(0, '{"volume": '))
        sink.emit(ToolCallDelta(0, "11}"))
        return Finish("tool_calls", usage, {"shout": {"base_url": self.base_url}})

    async def check(self):
        return None

    async def aclose(self):
        return None


def factory(settings, base_url, api_key, pool):
    return ShoutProvider(base_url)
'''

MEGAPHONE = {"type": "function", "function": {"name": "megaphone", "parameters": {"type": "object"}}}
SETTINGS = {**FAST, "provider": "shout", "upstream_url": "http://shout.invalid/v1", "model": "shout-1"}


def install_plugin(root: Path) -> Path:
    """Write the plugin as an installed distribution (module + dist-info with its entry point) under ``root``."""
    (root / "ssegate_shout.py").write_text(PLUGIN)
    info = root / "ssegate_shout-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ssegate-shout\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ssegate.providers]\nshout = ssegate_shout:factory\n")
    return root


def with_path(root: Path) -> dict[str, str]:
    """The environment that puts ``root`` first on the gateway's ``sys.path`` (keeping ssegate's own path)."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def shout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = install_plugin(tmp_path_factory.mktemp("site"))
    with GatewayProcess(SETTINGS, environ=with_path(root)) as gw:
        yield gw


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_the_plugin_streams_every_part_on_the_native_stream(shout: GatewayProcess) -> None:
    resp, events = post_events(shout.url, {"messages": user("hello plugin world"), "tools": [MEGAPHONE]})
    assert resp.status_code == 200
    assert [e.event for e in events] == ["start", "reasoning", "reasoning", "message", "message", "message",
                                         "tool_call", "tool_call_delta", "tool_call_delta", "done"]
    assert events[0].json()["model"] == "shout-1"
    assert "".join(e.json()["delta"] for e in events if e.event == "message") == "HELLO PLUGIN WORLD "
    assert "".join(e.json()["delta"] for e in events if e.event == "reasoning") == "How loud? Very."
    done = events[-1].json()
    assert done["finish_reason"] == "tool_calls"
    assert done["tool_calls"] == [{"id": "call_shout", "type": "function",
                                   "function": {"name": "megaphone", "arguments": '{"volume": 11}'}}]
    assert done["provider_data"] == {"shout": {"base_url": "http://shout.invalid/v1"}}  # the factory got settings
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "estimated": False}


def test_the_plugin_answers_the_openai_sdk(shout: GatewayProcess) -> None:
    with openai.OpenAI(base_url=shout.url + "/v1", api_key="x", max_retries=0, timeout=30) as client:
        with client.chat.completions.stream(model="shout-1", messages=user("quiet please")) as stream:  # type: ignore
            final = stream.get_final_completion()
        assert final.choices[0].message.content == "QUIET PLEASE "
        assert (final.choices[0].message.model_extra or {}).get("reasoning_content") == "How loud? Very."
        with pytest.raises(openai.BadRequestError) as info:  # the plugin's own check_request
            client.chat.completions.create(model="shout-1", messages=user("x"), temperature=0.5)  # type: ignore
    assert isinstance(info.value.body, dict) and info.value.body["message"].startswith("temperature: ")


def test_the_plugin_is_ready(shout: GatewayProcess) -> None:
    resp = httpx.get(shout.url + "/readyz", timeout=10)
    assert resp.status_code == 200, resp.text


def test_without_the_entry_point_the_provider_name_is_refused(tmp_path: Path) -> None:
    """The control: the same settings with the module importable but no dist-info (no entry point) do not start,
    and the error names the setting, so it is the entry point that made ``shout`` a provider."""
    (tmp_path / "ssegate_shout.py").write_text(PLUGIN)
    gw = GatewayProcess(SETTINGS, environ=with_path(tmp_path))
    try:
        with pytest.raises(RuntimeError, match="exited") as info:
            gw.start()
    finally:
        gw.stop()
    message = str(info.value).lower()
    assert "provider" in message and "demo, openai, anthropic" in message, json.dumps(str(info.value))

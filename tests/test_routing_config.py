"""The routing file (``routing/config.py``) and the table's choices (``routing/table.py``), as pure units.

Every wrong field gets its own one-line error naming the file, the entry and the field; the same files make
``ssegate serve --config`` exit non-zero at start-up (one line on stderr), checked end to end here too. The
table's least-busy choice and the cooldown state machine run on an explicit clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ssegate.core.request import ChatRequest
from ssegate.errors import ConfigError, ModelNotFound
from ssegate.parts import Finish
from ssegate.plugins import provider_names
from ssegate.routing import HealthPolicy, RoutingTable, implicit_config, load_config
from ssegate.routing.table import Deployed, Group
from tests.support.gateway import ROOT

PROVIDERS = provider_names()
ENV = {"OPENAI_KEY": "sk-openai-secret-1", "EU_KEY": "sk-eu-secret-2", "TEAM_A": "team-a-secret-3", "EMPTY": ""}

GOOD = """
[[models]]
name = "fast"
provider = "openai"
url = "https://api.openai.com/v1/"
api_key = "${OPENAI_KEY}"
upstream_model = "gpt-4o-mini"
fallbacks = ["claude", "local/llama3.2"]

[[models]]
name = "fast"
provider = "openai"
url = "https://eu.example.net/v1"
api_key = "${EU_KEY}"

[[models]]
name = "claude"
provider = "anthropic"
upstream_model = "claude-sonnet-4-5"
api_key = "${OPENAI_KEY}"

[[models]]
name = "local/*"
provider = "openai"
url = "http://127.0.0.1:11434/v1"

[[models]]
name = "router/*"
provider = "openai"
url = "http://127.0.0.1:11435/v1"
upstream_model = "vendor/*"
label = "openrouter"

[[models]]
name = "demo"
provider = "demo"

[[keys]]
key = "${TEAM_A}"
models = ["fast", "local/*"]
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return str(path)


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Any:
    return load_config(write(tmp_path, text), PROVIDERS, ENV if env is None else env)


def test_a_complete_file_loads(tmp_path: Path) -> None:
    cfg = load(tmp_path, GOOD)
    fast, eu, claude, local, router, demo = cfg.models
    assert [m.name for m in cfg.models] == ["fast", "fast", "claude", "local/*", "router/*", "demo"]
    assert cfg.listed == ("fast", "claude", "local/*", "router/*", "demo")
    assert cfg.default_model == "fast"
    assert fast.deployment.url == "https://api.openai.com/v1"  # the trailing slash is dropped
    assert fast.deployment.api_key == "sk-openai-secret-1"
    assert fast.deployment.label == "openai:api.openai.com/v1"
    assert eu.deployment.label == "openai:eu.example.net/v1"
    assert claude.deployment.label == "anthropic:api.anthropic.com/v1"  # the provider's default URL
    assert local.deployment.label == "openai:127.0.0.1:11434/v1"
    assert router.deployment.label == "openrouter"
    assert demo.deployment.label == "demo"
    assert fast.upstream_name("fast") == "gpt-4o-mini"
    assert eu.upstream_name("fast") == "fast"
    assert local.upstream_name("local/llama3.2") == "llama3.2"
    assert router.upstream_name("router/mistral/large") == "vendor/mistral/large"
    assert cfg.keys[0].models == ("fast", "local/*")
    assert "sk-openai-secret-1" not in repr(cfg)  # keys are repr=False
    assert "team-a-secret-3" not in repr(cfg)


def test_a_wildcard_first_means_no_default(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[[models]]\nname = "*"\nprovider = "demo"\n')
    assert cfg.default_model is None
    assert cfg.listed == ("*",)


# (file text, what the one-line error must name, in order)
BAD = [
    pytest.param('[[models]]\nname = "a"\nprovider = "openai"\ncolour = "red"\n',
                 ['[[models]] entry 1 (name \'a\')', "unknown field 'colour'"], id="unknown-field"),
    pytest.param('[[models]]\nprovider = "openai"\n', ["[[models]] entry 1", "name: missing"], id="missing-name"),
    pytest.param('[[models]]\nname = 5\nprovider = "openai"\n', ["[[models]] entry 1", "name: expected a string"],
                 id="name-type"),
    pytest.param('[[models]]\nname = "a"\n', ["entry 1 (name 'a')", "provider: missing"], id="missing-provider"),
    pytest.param('[[models]]\nname = "a"\nprovider = "openia"\n',
                 ["entry 1 (name 'a')", "provider: unknown provider 'openia'"], id="unknown-provider"),
    pytest.param('[[models]]\nname = "a"\nprovider = "demo"\n[[models]]\nname = "b"\nprovider = "openai"\n'
                 'url = "ftp://x"\n', ["entry 2 (name 'b')", "url: expected an http"], id="url-scheme"),
    pytest.param('[[models]]\nname = "a"\nprovider = "openai"\nurl = "http://u:p@host/v1"\n',
                 ["entry 1 (name 'a')", "url: put credentials in api_key"], id="url-credentials"),
    pytest.param('[[models]]\nname = "a"\nprovider = "openai"\napi_key = "${NOPE_NOT_SET}"\n',
                 ["entry 1 (name 'a')", "api_key: the environment variable NOPE_NOT_SET is not set"], id="env-unset"),
    pytest.param('[[models]]\nname = "a"\nprovider = "openai"\napi_key = "${EMPTY}"\n',
                 ["entry 1 (name 'a')", "api_key: the environment variable EMPTY is empty"], id="env-empty"),
    pytest.param('[[models]]\nname = "a"\nprovider = "openai"\nfallbacks = ["b"]\n',
                 ["entry 1 (name 'a')", "fallbacks: 'b' is not a model of this file"], id="fallback-unknown"),
    pytest.param('[[models]]\nname = "a"\nprovider = "openai"\nfallbacks = ["a"]\n',
                 ["entry 1 (name 'a')", "fallbacks: a model cannot be its own fallback"], id="fallback-self"),
    pytest.param('[[models]]\nname = "a"\nprovider = "openai"\nfallbacks = "b"\n',
                 ["entry 1 (name 'a')", "fallbacks: expected a list"], id="fallback-type"),
    pytest.param('[[models]]\nname = "a"\nprovider = "openai"\n[[models]]\nname = "a"\nprovider = "openai"\n',
                 ["entry 2 (name 'a')", "label: 'openai:api.openai.com/v1' is already the label of [[models]] entry 1"],
                 id="group-same-label"),
    pytest.param('[[models]]\nname = "lo*cal"\nprovider = "openai"\n', ["entry 1 (name 'lo*cal')", "name: a wildcard"],
                 id="wildcard-middle"),
    pytest.param('[[models]]\nname = "local*"\nprovider = "openai"\n', ["entry 1 (name 'local*')", "name: a wildcard"],
                 id="wildcard-no-slash"),
    pytest.param('[[models]]\nname = "l/*"\nprovider = "openai"\nupstream_model = "x"\n',
                 ["entry 1 (name 'l/*')", "upstream_model: a wildcard entry's upstream_model must hold one '*'"],
                 id="wildcard-upstream-model"),
    pytest.param('[[models]]\nname = "d"\nprovider = "demo"\nurl = "http://x/v1"\n',
                 ["entry 1 (name 'd')", "url: the demo provider is embedded"], id="demo-url"),
    pytest.param('[[models]]\nname = "a b"\nprovider = "demo"\n', ["entry 1 (name 'a b')", "name: use visible ASCII"],
                 id="name-space"),
    pytest.param('[[models]]\nname = "a"\nprovider = "demo"\n[[keys]]\nkey = "k-1234567"\nmodels = ["b"]\n',
                 ["[[keys]] entry 1", "models: 'b' is not a model name of this file"], id="key-unknown-model"),
    pytest.param('[[models]]\nname = "a"\nprovider = "demo"\n[[keys]]\nmodels = ["a"]\n',
                 ["[[keys]] entry 1", "key: missing"], id="key-missing"),
    pytest.param('[[models]]\nname = "a"\nprovider = "demo"\n[[keys]]\nkey = "${TEAM_A}"\n[[keys]]\n'
                 'key = "${TEAM_A}"\n', ["[[keys]] entry 2", "key: the same key as [[keys]] entry 1"], id="key-twice"),
    pytest.param('[[models]]\nname = "a"\nprovider = "demo"\n[[keys]]\nkey = "x"\nteam = "a"\n',
                 ["[[keys]] entry 1", "unknown field 'team'"], id="key-unknown-field"),
    pytest.param('[server]\nport = 1\n', ["unknown top-level field 'server'"], id="top-level"),
    pytest.param('# nothing\n', ["no [[models]] entry"], id="empty"),
    pytest.param('[[models]\nname = "a"\n', ["not valid TOML"], id="toml-syntax"),
]


@pytest.mark.parametrize(("text", "named"), BAD)
def test_each_wrong_field_gets_its_own_error(tmp_path: Path, text: str, named: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "models.toml") + ": ")
    assert "\n" not in message
    at = 0
    for part in named:
        found = message.find(part, at)
        assert found >= 0, f"{part!r} not in {message!r} (after position {at})"
        at = found + len(part)


def test_a_key_never_appears_in_an_error(tmp_path: Path) -> None:
    """A file with keys set and another field wrong: the message names the field, not the keys."""
    text = GOOD.replace('upstream_model = "claude-sonnet-4-5"', 'upstream_model = 7')
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert "entry 3 (name 'claude'): upstream_model: expected a string, got a number" in str(info.value)
    for secret in ("sk-openai-secret-1", "sk-eu-secret-2", "team-a-secret-3"):
        assert secret not in str(info.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read the routing file"):
        load_config(str(tmp_path / "nope.toml"), PROVIDERS, {})


@pytest.mark.parametrize(("text", "named"), [p for p in BAD if p.id in (
    "unknown-field", "env-unset", "fallback-unknown", "group-same-label", "toml-syntax")])
def test_serve_refuses_a_bad_file_at_start_up(tmp_path: Path, text: str, named: list[str]) -> None:
    """``ssegate serve --config bad.toml`` exits 2 with one line on stderr naming the file, entry and field."""
    path = write(tmp_path, text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEGATE_")}
    env["OPENAI_KEY"] = ENV["OPENAI_KEY"]
    proc = subprocess.run([sys.executable, "-m", "ssegate", "serve", "--config", path, "--port", "0"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"ssegate: {path}: ")
    for part in named:
        assert part in lines[0]
    assert ENV["OPENAI_KEY"] not in proc.stderr


# --- the table ---------------------------------------------------------------------------------------------------
class FakeProvider:
    name = "fake"
    label = "fake"

    def check_request(self, request: ChatRequest) -> None:
        return None

    async def stream(self, request: ChatRequest, sink: Any) -> Finish:  # pragma: no cover - not streamed here
        raise NotImplementedError

    async def check(self) -> None:  # pragma: no cover
        return None

    async def aclose(self) -> None:  # pragma: no cover
        return None


def table(tmp_path: Path, text: str = GOOD, policy: HealthPolicy | None = None) -> RoutingTable:
    return RoutingTable(load(tmp_path, text), lambda dep: FakeProvider(), policy or HealthPolicy(),
                        lambda key: "fp:" + key)


def test_lookup_exact_then_longest_wildcard(tmp_path: Path) -> None:
    text = GOOD + '\n[[models]]\nname = "local/big/*"\nprovider = "demo"\n[[models]]\nname = "*"\nprovider = "demo"\n'
    t = table(tmp_path, text)
    assert t.resolve("fast", "anonymous").name == "fast"
    assert t.resolve("local/llama3.2", "anonymous").name == "local/*"
    assert t.resolve("local/big/one", "anonymous").name == "local/big/*"
    assert t.resolve("anything", "anonymous").name == "*"
    assert t.lookup("local/") is t.groups["*"]  # a wildcard needs a suffix
    with pytest.raises(ModelNotFound, match=r"'local/\*' is a wildcard: ask for a model under it, e\.g\. 'local/NAME'"):
        t.resolve("local/*", "anonymous")  # what a client picking from GET /v1/models may send
    assert t.listed("local/*", "anonymous").name == "local/*"  # which lists it, and retrieves it


def test_unknown_and_forbidden_models_are_the_same_404(tmp_path: Path) -> None:
    t = table(tmp_path)
    team = "fp:" + ENV["TEAM_A"]
    with pytest.raises(ModelNotFound) as unknown:
        t.resolve("gpt-9", team)
    with pytest.raises(ModelNotFound) as forbidden:
        t.resolve("claude", team)
    assert "GET /v1/models" in unknown.value.message
    assert unknown.value.message.replace("gpt-9", "X") == forbidden.value.message.replace("claude", "X")
    assert t.resolve("local/qwen", team).name == "local/*"
    assert [n for n, _ in t.listing(team)] == ["fast", "local/*"]
    assert [n for n, _ in t.listing("anonymous")] == ["fast", "claude", "local/*", "router/*", "demo"]
    assert t.client_keys == (ENV["TEAM_A"],)


def test_fallbacks_resolve_to_groups_with_the_name_asked(tmp_path: Path) -> None:
    t = table(tmp_path)
    assert [(g.name, asked) for g, asked in t.groups["fast"].fallbacks] == [("claude", "claude"),
                                                                            ("local/*", "local/llama3.2")]


def test_implicit_entry_sends_every_name_and_chains_the_fallback_urls() -> None:
    cfg = implicit_config("openai", ["http://a:1/v1", "http://b:2/v1"], "k", "fake-model")
    t = RoutingTable(cfg, lambda dep: FakeProvider(), HealthPolicy(), lambda k: k)
    group = t.resolve("whatever-model", "anonymous")
    assert group.name == "*"
    assert group.upstream_name(group.members[0], "whatever-model") == "whatever-model"
    [(step, asked)] = group.fallbacks
    assert asked is None and step.members[0].label == "openai:b:2/v1"
    assert t.listing("anonymous") == [("fake-model", "openai")]


def deployed(label: str, policy: HealthPolicy | None = None) -> Deployed:
    from ssegate.routing.config import Deployment

    return Deployed("m", Deployment("openai", "", label), FakeProvider(), policy or HealthPolicy())


def test_least_busy_with_round_robin_ties() -> None:
    a, b = deployed("a"), deployed("b")
    g = Group("m", (), [a, b])
    picks = []
    for _ in range(4):
        d = g.pick(g.members, (), 0.0)
        assert d is not None
        picks.append(d.label)
    assert sorted(picks) == ["a", "a", "b", "b"]  # ties alternate
    a.acquire(0.0)
    assert [g.pick(g.members, (), 0.0) for _ in range(3)] == [b, b, b]  # the least busy wins
    assert g.pick(g.members, [b], 0.0) is a  # not tried yet beats less busy
    assert g.pick(g.members, [a, b], 0.0) is None


def test_cooldown_opens_after_repeated_failures_then_one_trial_decides() -> None:
    d = deployed("a", HealthPolicy(failures=3, window_s=30, cooldown_s=10))
    for t in (0.0, 1.0):
        d.release(t, d.acquire(t), failed="upstream_error")
    assert d.available(2.0)
    d.release(40.0, d.acquire(40.0), failed="upstream_error")  # the first two are out of the window by now
    assert d.available(40.0)
    d.release(41.0, d.acquire(41.0), failed="upstream_error")
    d.release(42.0, d.acquire(42.0), failed="upstream_error")
    assert not d.available(42.0) and d.cooling(51.9) and d.cooldowns == 1
    assert d.available(52.0)  # half-open
    trial = d.acquire(52.0)
    assert trial and not d.available(52.5)  # one trial at a time
    d.release(53.0, trial, failed="upstream_error")  # the trial failed: open again
    assert d.cooling(62.9) and d.cooldowns == 2
    trial = d.acquire(63.0)
    d.release(63.5, trial, ok=True)  # the trial succeeded: closed
    assert d.available(63.5) and not d.open_until
    assert d.errors == {"upstream_error": 6}


def test_retry_after_sets_the_cooldown_at_once() -> None:
    d = deployed("a", HealthPolicy(failures=3, window_s=30, cooldown_s=10))
    d.release(0.0, d.acquire(0.0), failed="rate_limited", retry_after=2.0)
    assert not d.available(1.9) and d.available(2.0)


def test_a_cancelled_trial_leaves_it_half_open() -> None:
    d = deployed("a", HealthPolicy(failures=1, window_s=30, cooldown_s=5))
    d.release(0.0, d.acquire(0.0), failed="upstream_error")
    trial = d.acquire(6.0)
    d.release(6.5, trial)  # cancelled: neither success nor failure
    assert d.available(6.5) and d.open_until


def test_the_example_in_docs_models_md_loads(tmp_path: Path) -> None:
    """docs/models.md's complete example is a valid file (with its variables set)."""
    import re

    doc = (ROOT / "docs" / "models.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    env = {v: f"value-of-{v}" for v in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "US_KEY", "EU_KEY", "TEAM_A_KEY")}
    cfg = load(tmp_path, example.group(1), env)
    assert cfg.listed == ("fast", "claude", "gpt-4o", "local/*")
    assert [m.deployment.label for m in cfg.models if m.name == "gpt-4o"] == ["gpt-4o-us", "gpt-4o-eu"]

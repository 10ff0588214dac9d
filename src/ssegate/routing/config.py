"""The routing file (CONTRACT §9): a TOML file of models, parsed and validated into frozen values.

```toml
[[models]]
name = "fast"                      # what clients send as "model"; "prefix/*" or "*" is a wildcard
provider = "openai"                # demo | openai | anthropic | a plugin's name
url = "https://api.openai.com/v1"  # [the provider's default]
api_key = "${OPENAI_API_KEY}"      # ${VAR} is read from the environment when the file is loaded
upstream_model = "gpt-4o-mini"     # [name; for a wildcard "*", i.e. the suffix]
fallbacks = ["claude"]             # other model names, tried in order before the first output
label = "openai-us"                # [<provider>:<host[:port]/path>] names the deployment in headers, logs, metrics

[[keys]]
key = "${TEAM_A_KEY}"              # a client key (valid in addition to SSEGATE_API_KEYS)
models = ["fast", "local/*"]       # [every model] the names this key may use, as written in [[models]]
```

Validation happens once, when the file is loaded (at start-up and on each reload), and every problem is a
``ConfigError`` whose one-line message names the file, the entry (``[[models]] entry 2 (name "fast")``) and the
field, then says what is wrong: unknown fields, wrong types, an unknown provider, a URL that is not ``http(s)``,
an unset ``${VAR}`` (named), a fallback that is no model of the file, two deployments of one group with the same
label. Keys are read from the environment into ``repr=False`` fields and never appear in a message.

Rules that the table (``table.py``) relies on:

- The same ``name`` twice makes a group (load-balanced). A group's fallbacks are those its entries list, in
  order, without repeats. Fallbacks are followed one level deep (a fallback's own fallbacks are not tried).
- A wildcard is ``*`` alone (every name) or ``prefix/*``; the requested name's part after the prefix is sent
  upstream, through ``upstream_model`` when that holds a ``*`` (``"openrouter/*"``).
- The first entry is the default model (for requests that name none), unless it is a wildcard: then requests
  must name a model.
- Labels are ``<provider>:<host[:port]/path>`` (no scheme, no credentials; ``demo`` for the demo model) unless
  the entry sets ``label``. Within one group labels must differ (two deployments on one URL with two keys: give
  them labels).

Without a file (``implicit_config``), the settings PROVIDER, UPSTREAM_URL, UPSTREAM_API_KEY and MODEL make one
entry named ``*`` that sends every model name upstream as asked, followed by one step per FALLBACK_URLS entry:
the gateway behaves as it did before routing files existed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..upstream import DEFAULT_URLS

__all__ = [
    "Deployment",
    "KeyRule",
    "ModelEntry",
    "RoutingConfig",
    "implicit_config",
    "load_config",
]

MODEL_FIELDS: Final = ("name", "provider", "url", "api_key", "upstream_model", "fallbacks", "label")
KEY_FIELDS: Final = ("key", "models")
TOP_FIELDS: Final = ("models", "keys")

_ENV_REF: Final = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PRINTABLE: Final = re.compile(r"[!-~]+")  # visible ASCII, no spaces: safe in a header and a Prometheus label
_LABEL: Final = re.compile(r"[!-~][ -~]*")


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream that serves a model: a provider kind at a URL with a key."""

    provider: str
    url: str
    """Base URL without a trailing slash; ``""``: the provider's default."""
    label: str
    """Names this deployment in headers, logs and metrics; never holds a key or credentials."""
    api_key: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One ``[[models]]`` entry."""

    index: int
    """Its position in the file, from 1."""
    name: str
    deployment: Deployment
    upstream_model: str | None = None
    """The name sent upstream; None: the name asked for (a wildcard's suffix)."""
    fallbacks: tuple[str, ...] = ()

    @property
    def wildcard(self) -> bool:
        return self.name.endswith("*")

    @property
    def prefix(self) -> str:
        """What a requested name must start with (the whole name for an exact entry)."""
        return self.name[:-1] if self.wildcard else self.name

    def upstream_name(self, asked: str) -> str:
        """The model name this entry sends upstream for a request that asked for ``asked``."""
        if not self.wildcard:
            return self.upstream_model or self.name
        suffix = asked[len(self.prefix):] if self.prefix else asked
        upstream = self.upstream_model
        return upstream.replace("*", suffix, 1) if upstream else suffix  # (no upstream name: the suffix, as asked)


@dataclass(frozen=True, slots=True)
class KeyRule:
    """One ``[[keys]]`` entry: a client key and the model names it may use (None: every one)."""

    index: int
    key: str = field(repr=False)
    models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    source: str
    """The file's path; ``""`` for the implicit entry made from the settings."""
    models: tuple[ModelEntry, ...]
    keys: tuple[KeyRule, ...] = ()
    default_model: str | None = None
    listed: tuple[str, ...] = ()
    """The names ``GET /v1/models`` shows (wildcards as written), in file order."""
    chained: tuple[Deployment, ...] = ()
    """Implicit config only: the FALLBACK_URLS, tried in order after the entry (same provider and key)."""


# --- the implicit entry ------------------------------------------------------------------------------------------
def implicit_config(provider: str, urls: list[str], api_key: str, default_model: str | None) -> RoutingConfig:
    """The one entry that the settings make when no routing file is given (see the module's docstring)."""
    deployments = [Deployment(provider, url, derive_label(provider, url), api_key) for url in urls or [""]]
    entry = ModelEntry(1, "*", deployments[0])
    listed = (default_model,) if default_model else ()
    return RoutingConfig("", (entry,), (), default_model, listed, tuple(deployments[1:]))


# --- loading a file ----------------------------------------------------------------------------------------------
def load_config(path: str, providers: Collection[str], environ: Mapping[str, str] | None = None) -> RoutingConfig:
    """Read and validate the routing file at ``path``; ``providers`` are the provider names this process knows."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the routing file: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the routing file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _Loader(path, providers, os.environ if environ is None else environ).load(doc)


def derive_label(provider: str, url: str) -> str:
    """``<provider>:<host[:port]/path>`` of ``url`` (or of the provider's default URL); just the provider's name
    when there is no URL at all (the demo model, a plugin without one)."""
    url = url or DEFAULT_URLS.get(provider, "")
    if not url:
        return provider
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        host = host.encode("ascii", "replace").decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{provider}:{host}{port}{parts.path.rstrip('/')}"


class _Loader:
    def __init__(self, path: str, providers: Collection[str], environ: Mapping[str, str]) -> None:
        self.path = path
        self.providers = providers
        self.environ = environ

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {problem}" if where else f"{self.path}: {problem}")

    def load(self, doc: dict[str, Any]) -> RoutingConfig:
        for key in doc:
            if key not in TOP_FIELDS:
                raise self.fail("", f"unknown top-level field {key!r} (expected [[models]] and [[keys]])")
        models = doc.get("models")
        if models is None:
            raise self.fail("", "no [[models]] entry: the file must list at least one model")
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            raise self.fail("models", "expected [[models]] tables")
        if not models:
            raise self.fail("", "no [[models]] entry: the file must list at least one model")
        entries = tuple(self._model(i, m) for i, m in enumerate(models, 1))
        self._check_groups(entries)
        keys_doc = doc.get("keys", [])
        if not isinstance(keys_doc, list) or not all(isinstance(k, dict) for k in keys_doc):
            raise self.fail("keys", "expected [[keys]] tables")
        names = {e.name for e in entries}
        keys = tuple(self._key(i, k, names) for i, k in enumerate(keys_doc, 1))
        seen: dict[str, int] = {}
        for rule in keys:
            if rule.key in seen:
                raise self.fail(f"[[keys]] entry {rule.index}", f"key: the same key as [[keys]] entry {seen[rule.key]}")
            seen[rule.key] = rule.index
        listed = tuple(dict.fromkeys(e.name for e in entries))
        default = None if entries[0].wildcard else entries[0].name
        return RoutingConfig(self.path, entries, keys, default, listed)

    # --- [[models]] --------------------------------------------------------------------------------------------
    def _model(self, index: int, m: dict[str, Any]) -> ModelEntry:
        name = m.get("name")
        where = f"[[models]] entry {index}" + (f" (name {name!r})" if isinstance(name, str) and name else "")
        for key in m:
            if key not in MODEL_FIELDS:
                raise self.fail(where, f"unknown field {key!r} (expected {', '.join(MODEL_FIELDS)})")
        if name is None:
            raise self.fail(where, "name: missing (what clients send as \"model\")")
        name = self._string(where, "name", name)
        if not _PRINTABLE.fullmatch(name):
            raise self.fail(where, "name: use visible ASCII characters without spaces")
        if "*" in name[:-1] or (name.endswith("*") and name != "*" and not name.endswith("/*")):
            raise self.fail(where, "name: a wildcard is \"*\" alone or \"prefix/*\" (a '*' only as the last part)")
        provider = m.get("provider")
        if provider is None:
            raise self.fail(where, f"provider: missing (one of {', '.join(self.providers)})")
        provider = self._string(where, "provider", provider)
        if provider not in self.providers:
            raise self.fail(where, f"provider: unknown provider {provider!r} (expected one of "
                                   f"{', '.join(self.providers)})")
        url = self._expand(where, "url", self._string(where, "url", m["url"])) if "url" in m else ""
        url = url.rstrip("/")
        if url:
            self._check_url(where, url)
        api_key = self._expand(where, "api_key", self._string(where, "api_key", m["api_key"])) if "api_key" in m \
            else ""
        if provider == "demo" and (url or api_key):
            raise self.fail(where, f"{'url' if url else 'api_key'}: the demo provider is embedded and takes none")
        upstream_model = self._string(where, "upstream_model", m["upstream_model"]) if "upstream_model" in m \
            else None
        if upstream_model is not None and name.endswith("*") and upstream_model.count("*") != 1:
            raise self.fail(where, "upstream_model: a wildcard entry's upstream_model must hold one '*' (where the "
                                   "requested name's suffix goes), e.g. \"vendor/*\"")
        fallbacks = self._strings(where, "fallbacks", m.get("fallbacks", []))
        if name in fallbacks:
            raise self.fail(where, "fallbacks: a model cannot be its own fallback")
        label = self._string(where, "label", m["label"]) if "label" in m else derive_label(provider, url)
        if not _LABEL.fullmatch(label) or label != label.strip():
            raise self.fail(where, "label: use visible ASCII characters (spaces only inside)")
        return ModelEntry(index, name, Deployment(provider, url, label, api_key), upstream_model, tuple(fallbacks))

    def _check_groups(self, entries: tuple[ModelEntry, ...]) -> None:
        by_name: dict[str, list[ModelEntry]] = {}
        for e in entries:
            by_name.setdefault(e.name, []).append(e)
        for e in entries:
            group = by_name[e.name]
            first = next(g for g in group if g.deployment.label == e.deployment.label)
            if first is not e:
                raise self.fail(self._where(e), f"label: {e.deployment.label!r} is already the label of [[models]] "
                                                f"entry {first.index} of this group: give each deployment a label")
        for e in entries:
            for fb in e.fallbacks:
                target = _match(fb, by_name)
                if target is None:
                    raise self.fail(self._where(e), f"fallbacks: {fb!r} is not a model of this file")
                if target == e.name:
                    raise self.fail(self._where(e), f"fallbacks: {fb!r} is this model itself")

    @staticmethod
    def _where(e: ModelEntry) -> str:
        return f"[[models]] entry {e.index} (name {e.name!r})"

    # --- [[keys]] ----------------------------------------------------------------------------------------------
    def _key(self, index: int, k: dict[str, Any], names: set[str]) -> KeyRule:
        where = f"[[keys]] entry {index}"
        for key in k:
            if key not in KEY_FIELDS:
                raise self.fail(where, f"unknown field {key!r} (expected {', '.join(KEY_FIELDS)})")
        if "key" not in k:
            raise self.fail(where, "key: missing (the client key, e.g. \"${TEAM_A_KEY}\")")
        key = self._expand(where, "key", self._string(where, "key", k["key"]))
        if "," in key or key != key.strip():
            raise self.fail(where, "key: a key cannot hold commas or start or end with spaces")
        models = None
        if "models" in k:
            models = tuple(self._strings(where, "models", k["models"]))
            for name in models:
                if name not in names:
                    raise self.fail(where, f"models: {name!r} is not a model name of this file (wildcards as "
                                           "written, e.g. \"local/*\")")
        return KeyRule(index, key, models)

    # --- values ------------------------------------------------------------------------------------------------
    def _string(self, where: str, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"{name}: expected a string, got {_kind(value)}")
        if not value:
            raise self.fail(where, f"{name}: must not be empty")
        return value

    def _strings(self, where: str, name: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(where, f"{name}: expected a list of names, e.g. [\"claude\"]")
        return list(dict.fromkeys(value))

    def _expand(self, where: str, name: str, value: str) -> str:
        """``${VAR}`` replaced from the environment; an unset or empty variable is an error naming it."""

        def sub(m: re.Match[str]) -> str:
            var = m.group(1)
            if not _ENV_NAME.fullmatch(var):
                raise self.fail(where, f"{name}: ${{{var}}} is not a variable name")
            got = self.environ.get(var)
            if got is None:
                raise self.fail(where, f"{name}: the environment variable {var} is not set")
            if not got:
                raise self.fail(where, f"{name}: the environment variable {var} is empty")
            return got

        out = _ENV_REF.sub(sub, value)
        if not out.strip():
            raise self.fail(where, f"{name}: must not be empty")
        return out

    def _check_url(self, where: str, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(where, "url: expected an http:// or https:// base URL, e.g. http://127.0.0.1:11434/v1")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise self.fail(where, "url: the port is not a number from 0 to 65535") from None
        if parts.username is not None or parts.password is not None:
            raise self.fail(where, "url: put credentials in api_key, not in the URL")


def _match(name: str, by_name: Mapping[str, object]) -> str | None:
    """The entry name (as written) that ``name`` routes to: exact, then the longest wildcard prefix."""
    if name in by_name:
        return name
    best: str | None = None
    for candidate in by_name:
        if candidate.endswith("*") and name.startswith(candidate[:-1]) and len(name) > len(candidate) - 1:
            if best is None or len(candidate) > len(best):
                best = candidate
    return best


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__)

"""What the bench measures: the fake upstream called directly, the gateway (native, OpenAI-compatible, with
Redis, two workers with Redis), nginx as a byte relay, the FastAPI baselines and LiteLLM's proxy — each a
separate process (tree) on a free loopback port.

The A/B targets (``ab-*``, ``python -m bench --ab``) are the same gateway started through
``bench/launch_ssegate.py``, which swaps its upstream HTTP client for one of ``bench/clients/`` first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .proc import RESULTS, Proc, free_port, start, tree_cpu, tree_cpu_split, tree_rss, tree_sched, wait_http, wait_tcp

__all__ = ["LITELLM_PIN", "TARGETS", "Running", "Target", "Unavailable", "routing_table", "start_target",
           "start_tinyproxy"]

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LITELLM_PIN = "1.81.13"
"""Pinned LiteLLM: a release from before the 2026 supply-chain compromise of later LiteLLM releases."""
LITELLM_VENV = Path(__file__).resolve().parent / ".venv-litellm"


class Unavailable(Exception):
    """The target cannot run here (not installed, failed to start, endpoint missing)."""


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # direct | ssegate | baseline | litellm
    path: str
    native: bool = False
    redis: bool = False
    description: str = ""
    workers: int = 1
    client: str = ""
    """A/B targets: the upstream HTTP client the gateway is started with (``bench/clients``)."""
    probed: bool = False
    """Started by ``python -m bench.phases`` (wall-clock stamps and garbage collections recorded inside the gateway):
    the ``phases`` and ``gc`` scenarios only."""


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("direct", "direct", "/v1/chat/completions",
           description="the load generator calling the fake upstream itself (the reference)"),
    Target("ssegate", "ssegate", "/v1/chat/stream", native=True,
           description="`ssegate serve --provider openai`, native `POST /v1/chat/stream`, in-process event log"),
    Target("ssegate-openai", "ssegate", "/v1/chat/completions",
           description="the same gateway, OpenAI-compatible `POST /v1/chat/completions` (stream=true)"),
    Target("ssegate+redis", "ssegate", "/v1/chat/stream", native=True, redis=True,
           description="the gateway with `SSEGATE_REDIS_URL` (Redis Streams event log), native endpoint"),
    Target("ssegate-w2+redis", "ssegate", "/v1/chat/stream", native=True, redis=True, workers=2,
           description="the gateway with `--workers 2` and Redis (one Redis-backed event log, two processes)"),
    Target("ssegate-probed", "ssegate", "/v1/chat/stream", native=True, probed=True,
           description="`ssegate` with wall-clock stamps at each step of a stream's start and its garbage "
                       "collections recorded (`bench/phases.py`)"),
    Target("ssegate+redis-probed", "ssegate", "/v1/chat/stream", native=True, redis=True, probed=True,
           description="`ssegate+redis` with its garbage collections recorded (`bench/phases.py`)"),
    Target("nginx", "nginx", "/v1/chat/completions",
           description="nginx as a byte relay (C, one worker, `proxy_buffering off`, HTTP/1.1 keep-alive to the "
                       "upstream, no access log): the cost of relaying bytes without Python"),
    Target("sync_sdk", "baseline", "/v1/chat/completions",
           description="FastAPI `StreamingResponse` whose async generator iterates the *sync* `openai` SDK"),
    Target("fastapi_native_openai", "baseline", "/v1/chat/completions",
           description="FastAPI's native SSE (`fastapi.sse.EventSourceResponse`, `yield`) over `AsyncOpenAI`"),
    Target("httpx_relay", "baseline", "/v1/chat/completions",
           description="byte-for-byte relay: `httpx.AsyncClient.send(stream=True)` → `StreamingResponse(aiter_raw())`"),
    Target("litellm", "litellm", "/v1/chat/completions",
           description=f"LiteLLM proxy `litellm[proxy]=={LITELLM_PIN}` (own venv), `openai/*` wildcard model"),
    *(Target(f"ab-{client}", "ssegate", "/v1/chat/stream", native=True, client=client, description=what)
      for client, what in (
          ("httpclient", "A/B: the gateway with its own upstream client (`ssegate/upstream/httpclient.py`)"),
          ("aiohttp", "A/B: the gateway with an aiohttp `ClientSession` as its upstream client "
                      "(`bench/clients/aiohttp_pool.py`)"),
          ("pycurl", "A/B: the gateway with a libcurl multi-socket client driven by the event loop "
                     "(`bench/clients/curl_pool.py`)"))),
)}


@dataclass
class Running:
    target: Target
    port: int
    proc: Proc | None = None
    redis: Proc | None = None
    extra: dict[str, str] = field(default_factory=dict)
    companion_cpu_s: float = 0.0
    """CPU seconds of the processes a scenario ran beside this target and stopped (a second gateway, a proxy): the
    bench's own, which the noise probe (``__main__._Noise``) must not count as other users' of the machine."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.target.path}"

    @property
    def ps(self) -> psutil.Process | None:
        return self.proc.ps if self.proc else None

    def cpu(self) -> float:
        return tree_cpu(self.proc.ps) if self.proc else 0.0

    def cpu_split(self) -> tuple[float, float]:
        """``cpu()`` as (user, system): the system part is the kernel's (system calls, the network stack)."""
        return tree_cpu_split(self.proc.ps) if self.proc else (0.0, 0.0)

    def sched(self) -> tuple[float, float] | None:
        """Seconds the target's processes (its Redis too) spent on a CPU and runnable but waiting for one
        (``proc.tree_sched``); None without a process (``direct``)."""
        if self.proc is None:
            return None
        run, wait = tree_sched(self.proc.ps)
        if self.redis is not None:
            r_run, r_wait = tree_sched(self.redis.ps)
            run, wait = run + r_run, wait + r_wait
        return run, wait

    def redis_cpu(self) -> float:
        return tree_cpu(self.redis.ps) if self.redis else 0.0

    def rss(self) -> int:
        return tree_rss(self.proc.ps) if self.proc else 0

    def alive(self) -> bool:
        return self.proc is None or self.proc.alive()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(grace=2.0)
        if self.redis:
            self.redis.stop(grace=2.0)


def ssegate_bin() -> Path | None:
    exe = VENV_BIN / "ssegate"
    if exe.exists():
        return exe
    found = shutil.which("ssegate")
    return Path(found) if found else None


def litellm_ready(log: list[str], install_timeout: float = 600.0) -> Path:
    """The ``litellm`` executable of ``bench/.venv-litellm``, installing the pinned version if needed."""
    exe = LITELLM_VENV / "bin" / "litellm"
    python = LITELLM_VENV / "bin" / "python"
    if exe.exists():
        check = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                               capture_output=True, text=True, timeout=60)
        if check.stdout.strip() == LITELLM_PIN:
            return exe
    log.append(f"installing litellm[proxy]=={LITELLM_PIN} into {LITELLM_VENV.relative_to(ROOT)}")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=120,
                           capture_output=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_PIN}"],
                              capture_output=True, text=True, timeout=install_timeout)
    except (subprocess.SubprocessError, OSError) as e:
        raise Unavailable(f"install failed: {e}") from e
    if done.returncode != 0 or not exe.exists():
        raise Unavailable(f"install failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return exe


NO_PROXY_ENV = {"NO_PROXY": "*", "no_proxy": "*"}
"""For the gateways: the machine's proxy variables (if any) do not route the bench's loopback traffic."""


def proxy_env(url: str) -> dict[str, str]:
    """For a gateway whose upstream requests go through the proxy at ``url`` (lower-case names win)."""
    return {"HTTP_PROXY": url, "http_proxy": url, "NO_PROXY": "", "no_proxy": ""}


def start_tinyproxy() -> Proc:
    """A tinyproxy on a free loopback port (``make system-deps`` installs it)."""
    exe = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    if not os.path.exists(exe):
        raise Unavailable("tinyproxy is not installed (make system-deps)")
    port = free_port()
    conf = RESULTS / "tinyproxy.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 600\nMaxClients 20000\n"
                    "LogLevel Warning\nDisableViaHeader Yes\n")
    proc = start("tinyproxy", [exe, "-d", "-c", str(conf)], port)
    if not wait_tcp(port, 10):
        proc.stop()
        raise Unavailable(f"tinyproxy did not start: {proc.log_tail(3)}")
    return proc


def routing_table(entries: int, upstream: str) -> str:
    """A routing file of ``entries`` models (``--ssegate-models``): half exact names, half ``prefix/*`` wildcards,
    and last a ``*`` catch-all, which is what the bench's model ``bench`` matches, after every wildcard was
    checked (the slowest lookup the table can make). Every entry points at the bench's upstream."""
    lines = []
    for i in range(entries - 1):
        name = f"team-{i}/*" if i % 2 else f"model-{i}"
        lines += ["[[models]]", f'name = "{name}"', 'provider = "openai"', f'url = "{upstream}"',
                  'api_key = "bench"', f'label = "decoy-{i}"', ""]
    lines += ["[[models]]", 'name = "*"', 'provider = "openai"', f'url = "{upstream}"', 'api_key = "bench"', ""]
    return "\n".join(lines)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def nginx_version() -> str:
    exe = nginx_binary()
    if exe is None:
        return "not installed"
    try:
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (out.stderr or out.stdout).strip().rpartition("/")[2] or "?"


def nginx_config(port: int, upstream_port: int) -> Path:
    """A config for nginx as a byte relay in front of the fake upstream: the streaming lines of
    ``deploy/nginx.conf`` (HTTP/1.1 and keep-alive to the upstream, ``proxy_buffering off``), one worker, no
    access log (as the Python baselines run), limits above the bench's concurrency."""
    d = RESULTS / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    temps = "".join(f"    {kind}_temp_path {d / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                       "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # root: the worker must reach the temp dirs
    conf = d / "nginx.conf"
    conf.write_text(
        f"daemon off;\n{user}worker_processes 1;\nworker_rlimit_nofile 65536;\npid {d / 'nginx.pid'};\n"
        f"error_log {d / 'error.log'} warn;\n"
        "events { worker_connections 20000; }\n"
        f"http {{\n{temps}"
        "    access_log off;\n"
        f"    upstream bench {{\n        server 127.0.0.1:{upstream_port};\n        keepalive 1024;\n"
        "        keepalive_requests 100000;\n        keepalive_timeout 60s;\n    }\n"
        f"    server {{\n        listen 127.0.0.1:{port} backlog=4096;\n        client_max_body_size 20m;\n"
        "        location / {\n            proxy_pass http://bench;\n            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n            proxy_buffering off;\n'
        "            proxy_cache off;\n            gzip off;\n            proxy_read_timeout 600s;\n"
        "            proxy_ignore_client_abort off;\n        }\n    }\n}\n"
    )
    return conf


def start_target(target: Target, upstream_port: int, log: list[str], env: dict[str, str] | None = None, *,
                 ssegate_config: str | None = None, ssegate_models: int = 0) -> Running:
    """Start the target's processes and wait until they answer; raise :class:`Unavailable` if they cannot.
    ``env`` adds to a gateway's environment (``HTTP_PROXY``: its upstream requests through that proxy);
    ``ssegate_config`` (a routing file) or ``ssegate_models`` (a generated table of that many entries) start the
    ssegate targets with ``--config`` instead of one upstream."""
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    if target.kind == "direct":
        return Running(target, upstream_port)
    port = free_port()
    if target.kind == "ssegate":
        exe = ssegate_bin()
        if exe is None:
            raise Unavailable("`ssegate` is not installed in the venv")
        proxy = (env or {}).get("HTTP_PROXY")
        env = {"SSEGATE_UPSTREAM_API_KEY": "bench", "SSEGATE_MODEL": "bench", "SSEGATE_SHUTDOWN_GRACE_S": "1",
               **(proxy_env(proxy) if proxy else NO_PROXY_ENV)}
        redis = None
        if target.redis:
            redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
            if not os.path.exists(redis_bin):
                raise Unavailable("redis-server is not installed")
            rport = free_port()
            redis = start(f"redis-{target.name}", [redis_bin, "--port", str(rport), "--bind", "127.0.0.1",
                                                   "--save", "", "--appendonly", "no", "--maxclients", "10000"],
                          rport)
            if not wait_tcp(rport, 10):
                redis.stop()
                raise Unavailable(f"redis-server did not start: {redis.log_tail(3)}")
            env["SSEGATE_REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
        route = ["--provider", "openai", "--upstream-url", upstream]
        if ssegate_models:
            cfg = RESULTS / f"routing-{ssegate_models}.toml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(routing_table(ssegate_models, upstream))
            ssegate_config = str(cfg)
        if ssegate_config:
            route = ["--config", ssegate_config]
            env = {k: v for k, v in env.items() if k not in ("SSEGATE_UPSTREAM_API_KEY", "SSEGATE_MODEL")}
        argv = [str(exe)]
        if target.client:
            argv = [sys.executable, "-m", "bench.launch_ssegate", "--client", target.client]
        phases_file = ""
        if target.probed:
            argv = [sys.executable, "-m", "bench.phases"]
            phases_file = str(RESULTS / f"phases-{port}.json")
            env["BENCH_PHASES_FILE"] = phases_file
        argv += ["serve", *route, "--port", str(port)]
        if target.workers > 1:
            argv += ["--workers", str(target.workers)]
        proc = start(target.name + ("+proxy" if proxy else ""), argv, port, env=env, cwd=ROOT)
        running = Running(target, port, proc, redis)
        if phases_file:
            running.extra["phases_file"] = phases_file
        health = "/healthz"
        timeout = 30.0
    elif target.kind == "nginx":
        exe = nginx_binary()
        if exe is None:
            raise Unavailable("nginx is not installed (make system-deps installs it)")
        conf = nginx_config(port, upstream_port)
        proc = start(target.name, [exe, "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "error.log")],
                     port)
        running = Running(target, port, proc)
        health, timeout = "/health", 15.0
    elif target.kind == "baseline":
        proc = start(target.name, [sys.executable, "-m", "bench.baselines", target.name, "--port", str(port),
                                   "--upstream", upstream], port, cwd=ROOT)
        running = Running(target, port, proc)
        health, timeout = "/openapi.json", 30.0
    elif target.kind == "litellm":
        exe = litellm_ready(log)
        cfg = RESULTS / "litellm-config.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(
            "model_list:\n  - model_name: \"*\"\n    litellm_params:\n      model: \"openai/*\"\n"
            f"      api_base: \"{upstream}\"\n      api_key: \"bench\"\n"
            "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
        )
        # Unlimited upstream pool (its default caps at 50 connections per host), as for every baseline.
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
               "NO_DOCS": "True", "AIOHTTP_CONNECTOR_LIMIT": "20000", "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": "20000"}
        proc = start(target.name, [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                                   "--num_workers", "1"], port, env=env, cwd=RESULTS)
        running = Running(target, port, proc)
        health, timeout = "/health/liveliness", 90.0
    else:  # pragma: no cover
        raise ValueError(target.kind)
    t0 = time.monotonic()
    if not wait_http(proc, health, timeout):
        tail = proc.log_tail(4)
        running.stop()
        raise Unavailable(f"did not become ready in {timeout:.0f} s" + (f": {tail}" if tail else ""))
    running.extra["startup_s"] = f"{time.monotonic() - t0:.1f}"
    return running

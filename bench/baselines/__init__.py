"""Baselines the gateway is compared with: the usual ways to put an LLM stream behind FastAPI.

Each module builds a FastAPI ``app`` serving ``POST /v1/chat/completions`` (stream=true, OpenAI chunks) from
the upstream named by ``BENCH_UPSTREAM`` (an OpenAI base URL ending in ``/v1``). Run one with
``python -m bench.baselines NAME --port P --upstream URL`` (uvicorn, one worker, uvloop + httptools).

Every baseline's upstream client gets connection limits well above the bench's concurrency, so that a
default pool size (e.g. the ``openai`` SDK's 1000 connections) does not decide a capacity result: the bench
compares architectures, not one default knob.
"""

NAMES = ("sync_sdk", "fastapi_native_openai", "httpx_relay")
UPSTREAM_ENV = "BENCH_UPSTREAM"
MAX_CONNECTIONS = 20_000

"""The ssegate benchmark suite: ``python -m bench`` (``make bench``) writes ``docs/benchmarks.md``.

- ``upstream.py``: a fake OpenAI Chat Completions upstream (raw asyncio protocol on uvloop) with counters;
- ``loadgen.py``: thousands of raw-socket SSE clients in one process, timestamps per read;
- ``targets.py``: the gateway, the baselines (``baselines/``) and LiteLLM as processes on free ports;
- ``scenarios.py``: CPU per event, TTFT, capacity, memory per stream, cancel storm;
- ``report.py``: the Markdown report and its charts.
"""

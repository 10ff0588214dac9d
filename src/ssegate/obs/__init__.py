"""Observability: Prometheus metrics (``metrics``) and structured logs (``logs``), written once per stream."""

"""The runtime's Prometheus metrics, served by KServe's /metrics handler.

They are declared with the platform's others in ``shared/metrics.py``; the
runtime registers them once in the default registry, the one KServe serves.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from modelserve.shared.metrics import RuntimeMetrics

__all__ = ["RuntimeMetrics", "default_metrics"]

_default: RuntimeMetrics | None = None


def default_metrics() -> RuntimeMetrics:
    """The process-wide metrics in the default registry (registered once)."""
    global _default
    if _default is None:
        _default = RuntimeMetrics(REGISTRY)
    return _default

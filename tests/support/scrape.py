"""Read a Prometheus scrape: the families' names and one sample's value."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from modelserve.shared.metrics import exposed_names

__all__ = ["exposed_names", "fetch", "value"]


def fetch(url: str) -> str:
    """GET ``url`` (a ``/metrics``) and insist it answers in Prometheus' text format."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return response.text


def value(text: str, sample: str, **labels: str) -> float | None:
    """The value of the sample ``sample`` whose labels include ``labels``; None when absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and labels.items() <= found.labels.items():
                return float(found.value)
    return None

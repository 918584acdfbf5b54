"""Read a Prometheus scrape: the families' names and one sample's value."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from modelserve.shared.metrics import exposed_names

__all__ = ["exposed_names", "fetch", "value"]


def fetch(url: str, token: str | None = None) -> str:
    """GET ``url`` (a ``/metrics``) and insist it answers in Prometheus' text format.

    ``token``: the scrape token or an admin's, for the series labelled with
    servers, users and keys (shared/metrics_access.py).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, timeout=10, headers=headers)
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

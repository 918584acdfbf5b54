"""Who sees which ``/metrics``: identities only for the scraper and admins.

The gateway's and the API's ``/metrics`` label series by server UUID, user
name and key id (per-server charts and per-user usage need them). Those are
identities: an anonymous caller could list every user, key and server (and a
server's UUID was the one thing an attacker needed to reach its runtime). The
endpoint stays open, because Prometheus and health probes read it, but:

- without a credential the identity labels (``IDENTITY_LABELS``) are summed
  away: the same families and totals, nobody named;
- with ``Authorization: Bearer <settings.metrics_token>`` (what the PodMonitor
  sends, from a Secret) or an admin's access token, the full series.

Why not refuse anonymous callers outright: the platform's own totals (requests,
latency, bytes) are not secret and a probe without a Secret may read them; only
the names are.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from modelserve.shared.auth.errors import AuthError
from modelserve.shared.auth.guard import AccessGuard
from modelserve.shared.auth.tokens import bearer_token
from modelserve.shared.db.models import Role

IDENTITY_LABELS = frozenset({"server_uuid", "server", "user", "key", "username", "key_id"})


class _Anonymous(Collector):
    """``registry``'s families with the identity labels summed away."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            sums: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
            for sample in family.samples:
                kept = tuple(
                    sorted((k, v) for k, v in sample.labels.items() if k not in IDENTITY_LABELS)
                )
                sums[(sample.name, kept)] += sample.value
            stripped = Metric(family.name, family.documentation, family.type, family.unit)
            for (name, labels), total in sums.items():
                stripped.add_sample(name, dict(labels), total)
            yield stripped


def exposition(registry: CollectorRegistry, *, identities: bool) -> bytes:
    """Prometheus' text format of ``registry``, with or without the identity labels."""
    if identities:
        return generate_latest(registry)
    anonymous = CollectorRegistry(auto_describe=False)
    anonymous.register(_Anonymous(registry))
    return generate_latest(anonymous)


def is_scrape_token(presented: str | None, configured: str | None) -> bool:
    """Whether ``presented`` is the configured scrape token (constant-time)."""
    if not presented or not configured:
        return False
    return hmac.compare_digest(presented.encode(), configured.encode())


async def sees_identities(
    authorization: str | None, metrics_token: str | None, guard: AccessGuard
) -> bool:
    """The scrape token or an enabled admin's access token: the full series."""
    token = bearer_token(authorization)
    if is_scrape_token(token, metrics_token):
        return True
    if token is None:
        return False
    try:
        await guard.access(token, Role.ADMIN)
    except AuthError:
        return False
    return True

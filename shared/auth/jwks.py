"""An identity provider's signing keys (JWKS), fetched off the request path.

A token whose ``kid`` this process does not know must not make the request
wait for an HTTP fetch (on the gateway's event loop, that stalled every other
request; a stream of made-up ``kid``s made one fetch each). So the key set is
fetched on a background thread: at start, and when an unknown ``kid`` shows up,
at most once per ``min_interval`` seconds and one fetch at a time. The token
that named the unknown ``kid`` is refused (401: retry shortly); once the fetch
has landed, the next one with that ``kid`` verifies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt

from modelserve.shared.auth.errors import InvalidToken

log = logging.getLogger(__name__)
MIN_REFRESH_SECONDS = 30.0


class JwksKeys:
    def __init__(
        self,
        url: str,
        *,
        min_interval: float = MIN_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, cache_keys=False)
        self._min_interval, self._clock = min_interval, clock
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._fetching: threading.Thread | None = None
        self._last = float("-inf")
        self.fetches = 0
        self.refresh_soon()

    def key(self, token: str) -> Any:
        """The verification key ``token``'s ``kid`` names; never waits for the network."""
        kid = jwt.get_unverified_header(token).get("kid")
        keys = self._keys
        found = keys.get(kid) if kid is not None else None
        if found is None and kid is None and len(keys) == 1:
            found = next(iter(keys.values()))  # a provider with one key may omit kid
        if found is None:
            self.refresh_soon()
            raise InvalidToken(
                f"no matching signing key for kid {kid!r} (yet): the key set is being "
                "refreshed; retry shortly"
            )
        return found

    def refresh_soon(self) -> None:
        """Start one background fetch, unless one runs or one started lately."""
        with self._lock:
            if self._fetching is not None and self._fetching.is_alive():
                return
            if self._clock() < self._last + self._min_interval:
                return
            self._last = self._clock()
            self._fetching = threading.Thread(target=self._fetch, name="jwks", daemon=True)
            self._fetching.start()

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for a fetch under way (tests and start-up checks, never a request)."""
        fetching = self._fetching
        if fetching is not None:
            fetching.join(timeout)

    def _fetch(self) -> None:
        self.fetches += 1
        try:
            found = self._client.get_jwk_set(refresh=True)
        except Exception as exc:  # unreachable or malformed: keep the keys we have
            log.warning("could not fetch the JWKS: %s", exc)
            return
        self._keys = {k.key_id: k.key for k in found.keys if k.key_id is not None}

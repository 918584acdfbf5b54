"""Whose prompts may share a runtime's prefix cache.

A reused prefix shows in ``usage.prompt_tokens_details.cached_tokens`` and in
the time to first token, so a caller could learn whether someone else's prompt
began the same way. The gateway therefore tells the runtime whose request it
relays (``CACHE_SCOPE_HEADER``: a hash of the credential, never the identity
itself), and the runtime reuses kept and running sequences only within one
scope. The runtime trusts the header because only the gateway can reach it (the
internal credential); a runtime used on its own has one scope, the empty one.
"""

from __future__ import annotations

import hashlib

CACHE_SCOPE_HEADER = "x-modelserve-cache-scope"


def cache_scope(kind: str, identity: str) -> str:
    """The scope of one credential: an API key, or a user's tokens."""
    return hashlib.sha256(f"{kind}:{identity}".encode()).hexdigest()[:32]

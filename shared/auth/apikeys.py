"""API key format: ``msk_<key id>_<secret>``, shown once, kept only as a hash.

- The ``msk_`` prefix makes a leaked key recognisable to secret scanners and tells
  the credential check, without parsing, that this is a key and not a JWT.
- The key id (12 hex characters, 48 random bits) is public: it is how a key is
  listed, revoked and looked up by primary key, so no table scan or hash index is
  needed to find the row of a presented key.
- The secret is 32 random bytes (256 bits). With that much entropy a salted slow
  hash (argon2, as for passwords) buys nothing against guessing; a SHA-256 keeps
  the check cheap, and it is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

PREFIX = "msk_"
KEY_ID_BYTES = 6
SECRET_BYTES = 32
_SHAPE = re.compile(r"^msk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: ``plaintext`` goes to the caller once, ``secret_hash`` to the DB."""

    key_id: str
    plaintext: str = field(repr=False)
    secret_hash: str


def new_key() -> NewKey:
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return NewKey(key_id, f"{PREFIX}{key_id}_{secret}", hash_secret(secret))


def looks_like_key(token: str | None) -> bool:
    """True for anything presented with the key prefix (a JWT never starts so)."""
    return bool(token) and token is not None and token.startswith(PREFIX)


def parse(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    match = _SHAPE.match(token)
    return None if match is None else (match.group(1), match.group(2))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret_hash: str, secret: str) -> bool:
    """Constant-time comparison of the presented secret's hash with the stored one."""
    return hmac.compare_digest(secret_hash.encode(), hash_secret(secret).encode())

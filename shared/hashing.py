"""SHA-256 of files, read in chunks: a model can be larger than memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 4 * 1024 * 1024


def hash_file(path: Path) -> tuple[int, hashlib._Hash]:
    """Size and running sha256 of ``path`` (an absent file is empty), to resume hashing."""
    digest, size = hashlib.sha256(), 0
    if path.exists():
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    return size, digest


def sha256_file(path: Path) -> str:
    return hash_file(path)[1].hexdigest()

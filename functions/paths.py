"""The gateway's one path rule: a request path is taken only in its canonical spelling.

The gateway decides routing, metering and budgets on a path, and the runtime
(through another URL parser) decides what to run on it; if two spellings of a
path could mean different things to the two, a request could be judged free
here and run as a completion there (``chat/completions%3F``, ``%2F.``, ``%23``,
``/./``, ``//``). So the raw path, as the client sent it, must already be
canonical, and anything else is refused with a 400 naming the rule:

- every segment is non-empty and made only of RFC 3986 unreserved characters
  plus ``:`` and ``@`` (letters, digits, ``- . _ ~ : @``);
- no percent-encoding at all (a ``%`` is refused, whatever it encodes);
- no ``.`` or ``..`` segment.

Such a path reads the same before and after percent-decoding and dot-segment
removal, so the gateway and the runtime see one path; the upstream URL is then
built from these parts (:func:`upstream_url`), never by re-parsing a string.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx

_SEGMENT = re.compile(r"[A-Za-z0-9._~:@-]+")
RULE = (
    "the gateway takes only canonical paths: /<server-uuid>/<segments>, each segment "
    "made of letters, digits and - . _ ~ : @, with no percent-encoding, no empty "
    "segment and no '.' or '..' segment"
)


class AmbiguousPath(ValueError):
    """A path not in its canonical spelling; the message names the rule (400)."""


class NotAServer(AmbiguousPath):
    """A canonical path whose first segment is not a server's UUID (404)."""


@dataclass(frozen=True)
class GatewayPath:
    server: uuid.UUID
    segments: tuple[str, ...]  # after the server's UUID, e.g. ("v1", "chat", "completions")

    @property
    def path(self) -> str:
        return "/".join(self.segments)


def parse(raw_path: bytes) -> GatewayPath:
    """``/<uuid>/<rest>`` as sent (ASGI's ``raw_path``), or :class:`AmbiguousPath`."""
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise AmbiguousPath(f"non-ASCII bytes in the path: {RULE}") from None
    if not text.startswith("/"):
        raise AmbiguousPath(RULE)
    segments = text[1:].split("/")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise AmbiguousPath(f"segment {segment[:64]!r}: {RULE}")
    if len(segments) < 2:
        raise AmbiguousPath(RULE)
    try:
        server = uuid.UUID(segments[0])
    except ValueError:
        raise NotAServer(f"{segments[0][:64]!r} is not a server UUID") from None
    if str(server) != segments[0].lower():  # urn:, no hyphens: one spelling only
        raise NotAServer(f"{segments[0][:64]!r} is not a server UUID in its canonical form")
    return GatewayPath(server, tuple(segments[1:]))


def check_query(query: bytes) -> bytes:
    """The query string as sent, passed on only when it is printable ASCII."""
    if any(b <= 0x20 or b >= 0x7F or b == ord("#") for b in query):
        raise AmbiguousPath("the query string must be printable ASCII with no '#' or space")
    return query


def upstream_url(base: str, path: GatewayPath, query: bytes) -> httpx.URL:
    """The runtime's URL from its base and the validated parts (no string re-parse)."""
    root = httpx.URL(base)
    joined = f"{root.path.rstrip('/')}/{path.path}"
    return root.copy_with(path=joined, query=query or None)

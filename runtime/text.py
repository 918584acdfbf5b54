"""Sampled token bytes in, text safe to send out.

A token can end in the middle of a UTF-8 character and a stop string can
straddle tokens, so text is released only when it is whole and cannot be the
start of a stop string. The incremental decoder keeps at most three bytes back,
so streaming stays linear even on invalid bytes (which become U+FFFD), unlike
re-decoding the whole completion at every token.
"""

from __future__ import annotations

import codecs


class TextStream:
    """One completion's text: ``push`` each token's bytes, ``finish`` at the end."""

    def __init__(self, stops: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """The text that can be sent now (possibly empty)."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(piece)
        return self._release(final=False)

    def finish(self) -> str:
        """Whatever was held back, now that no more tokens come."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        pending = self._pending
        if not self._stops:
            self._pending = ""
            return pending
        hits = [i for i in (pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            self._pending = ""
            return pending[: min(hits)]
        keep = 0 if final else self._partial_stop(pending)
        self._pending = pending[len(pending) - keep :]
        return pending[: len(pending) - keep]

    def _partial_stop(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

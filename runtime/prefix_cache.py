"""Finished sequences kept in the KV cache, least recently used first out.

A sequence that ends leaves its tokens' keys and values behind. Kept, they let
the next request with the same start (a system prompt, a chat continued turn by
turn) skip that part of its prefill. A match is used only when it is worth it:
at least ``MIN_REUSE_TOKENS`` and more than ``SIMILARITY`` of the prompt (as
llama-server's ``--slot-prompt-similarity``), so the BOS token and a template's
preamble that every prompt starts with never count as a hit. A kept sequence
that is wholly a prefix of the prompt (the previous turn of the same chat) is
taken over and continued; one that only shares its start (a system prompt) is
copied up to the shared length and stays, so several system prompts stay
resident across unrelated traffic. This module only keeps the books; the engine
does the llama.cpp calls and decides, by the model's memory kind, which matches
it may use.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.int32]

MIN_REUSE_TOKENS = 4
SIMILARITY = 0.1


@dataclass(frozen=True)
class Match:
    """A kept sequence sharing ``length`` leading tokens with a prompt; ``whole`` when
    those are all the tokens it holds (it can be continued as it is)."""

    sequence: int
    length: int
    whole: bool


def worth_reusing(length: int, prompt_length: int) -> bool:
    """Whether ``length`` shared tokens are worth a kept sequence's cells."""
    return length >= MIN_REUSE_TOKENS and length > math.floor(SIMILARITY * prompt_length)


def common_prefix(a: Tokens, b: Tokens) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    size = min(len(a), len(b))
    differ = np.flatnonzero(a[:size] != b[:size])
    return int(differ[0]) if len(differ) else size


class PrefixCache:
    """Up to ``capacity`` kept sequences: id -> the tokens whose KV it holds.

    ``cells`` counts each cell once: a kept sequence that was copied from another
    kept one (``put(..., share=(donor, n))``) shares its first ``n`` cells with
    it, and they count as the donor's until the donor leaves the cache.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._kept: OrderedDict[int, Tokens] = OrderedDict()
        self._shares: dict[int, tuple[int, int]] = {}  # sequence -> (donor, cells shared)
        self._scopes: dict[int, str] = {}  # sequence -> whose prompts it holds
        self.cells = 0

    def __len__(self) -> int:
        return len(self._kept)

    def best(self, prompt: Tokens, *, scope: str = "", whole_only: bool = False) -> Match | None:
        """The kept sequence sharing the longest prefix with ``prompt``, if worth it.

        At most ``len(prompt) - 1`` tokens are reused: the last prompt token is
        always decoded again, since its logits give the first completion token.
        ``whole_only``: only sequences that are wholly a prefix of the prompt (a
        recurrent state can be continued from its end, never cut). Only sequences
        kept for the same ``scope`` are looked at (``shared/cache_scope.py``).
        """
        best: Match | None = None
        for sequence, tokens in self._kept.items():
            if self._scopes.get(sequence, "") != scope:
                continue
            length = min(common_prefix(prompt, tokens), len(prompt) - 1)
            whole = length == len(tokens)
            if whole_only and not whole:
                continue
            if worth_reusing(length, len(prompt)) and (best is None or length > best.length):
                best = Match(sequence, length, whole)
        return best

    def touch(self, sequence: int) -> None:
        """``sequence`` was just used: it is the last to be evicted."""
        self._kept.move_to_end(sequence)

    def tokens(self, sequence: int) -> Tokens:
        return self._kept[sequence]

    def put(
        self,
        sequence: int,
        tokens: Tokens,
        share: tuple[int, int] | None = None,
        scope: str = "",
    ) -> list[int]:
        """Keep ``sequence`` (sharing ``share[1]`` cells with kept ``share[0]``); returns
        the sequences evicted to stay within capacity."""
        if self.capacity == 0:
            return [sequence]
        self._kept[sequence] = tokens
        self._scopes[sequence] = scope
        self.cells += len(tokens)
        if share is not None and share[0] in self._kept and share[1] > 0:
            shared = min(share[1], len(tokens))
            self._shares[sequence] = (share[0], shared)
            self.cells -= shared
        evicted: list[int] = []
        while len(self._kept) > self.capacity:
            evicted.append(self.pop_oldest())
        return evicted

    def take(self, sequence: int) -> Tokens:
        """Hand a kept sequence over to a new request (it leaves the cache)."""
        return self._remove(sequence)

    def _remove(self, sequence: int) -> Tokens:
        tokens = self._kept.pop(sequence)
        self._scopes.pop(sequence, None)
        _, shared = self._shares.pop(sequence, (-1, 0))
        self.cells -= len(tokens) - shared
        for other, (donor, count) in list(self._shares.items()):
            if donor == sequence:  # the cells it shared are now its own
                del self._shares[other]
                self.cells += count
        return tokens

    def pop_oldest(self, *, sparing: int = -1) -> int:
        """Forget the least recently used sequence (never ``sparing``); the caller
        frees its cells."""
        sequence = next(s for s in self._kept if s != sparing)
        self._remove(sequence)
        return sequence

    def __contains__(self, sequence: object) -> bool:
        return sequence in self._kept

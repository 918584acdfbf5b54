"""Finished sequences kept in the KV cache, least recently used first out.

A sequence that ends leaves its tokens' keys and values behind. Kept, they let
the next request with the same start (a system prompt, a chat continued turn by
turn) skip that part of its prefill: the engine trims the kept sequence to the
shared prefix and continues it. Every KV cell belongs to exactly one sequence
(kept sequences are taken over, not shared), so the cells in use are simply the
sum of sequence lengths. This module only keeps the books; the engine does the
llama.cpp calls.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.int32]


@dataclass(frozen=True)
class Match:
    """A kept sequence sharing ``length`` leading tokens with a prompt."""

    sequence: int
    length: int


def common_prefix(a: Tokens, b: Tokens) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    size = min(len(a), len(b))
    differ = np.flatnonzero(a[:size] != b[:size])
    return int(differ[0]) if len(differ) else size


class PrefixCache:
    """Up to ``capacity`` kept sequences: id -> the tokens whose KV it holds."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._kept: OrderedDict[int, Tokens] = OrderedDict()
        self.cells = 0

    def __len__(self) -> int:
        return len(self._kept)

    def best(self, prompt: Tokens) -> Match | None:
        """The kept sequence sharing the longest prefix with ``prompt``.

        At most ``len(prompt) - 1`` tokens are reused: the last prompt token is
        always decoded again, since its logits give the first completion token.
        """
        best: Match | None = None
        for sequence, tokens in self._kept.items():
            length = min(common_prefix(prompt, tokens), len(prompt) - 1)
            if length > 0 and (best is None or length > best.length):
                best = Match(sequence, length)
        return best

    def put(self, sequence: int, tokens: Tokens) -> list[int]:
        """Keep ``sequence``; returns the sequences evicted to stay within capacity."""
        if self.capacity == 0:
            return [sequence]
        self._kept[sequence] = tokens
        self.cells += len(tokens)
        evicted: list[int] = []
        while len(self._kept) > self.capacity:
            evicted.append(self.pop_oldest())
        return evicted

    def take(self, sequence: int) -> Tokens:
        """Hand a kept sequence over to a new request (it leaves the cache)."""
        tokens = self._kept.pop(sequence)
        self.cells -= len(tokens)
        return tokens

    def pop_oldest(self) -> int:
        """Forget the least recently used sequence; the caller frees its cells."""
        sequence, tokens = self._kept.popitem(last=False)
        self.cells -= len(tokens)
        return sequence

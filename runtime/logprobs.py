"""Log-probabilities of sampled tokens, and OpenAI's two shapes for them.

They are the model's own distribution at each step (a log-softmax of the raw
logits), before temperature, penalties or a grammar reshape it, which is what
OpenAI and vLLM report. Only requests that ask for them pay for the softmax
over the vocabulary; everyone else never reaches this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CHAT_TOP_MAX = 20
COMPLETION_TOP_MAX = 5


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability and the most likely alternatives."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def from_logits(logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """``token``'s log-probability under ``logits``, with the ``top`` most likely tokens."""
    values = logits.astype(np.float64)
    peak = float(values.max())
    log_total = peak + float(np.log(np.exp(values - peak).sum()))
    best: tuple[tuple[int, float], ...] = ()
    if top > 0:
        count = min(top, len(values))
        candidates = np.argpartition(-values, count - 1)[:count]
        ordered = candidates[np.argsort(-values[candidates], kind="stable")]
        best = tuple((int(t), float(values[t]) - log_total) for t in ordered)
    return TokenLogprob(token, float(values[token]) - log_total, best)


Piece = Callable[[int], bytes]


def _text(piece: Piece, token: int) -> str:
    return piece(token).decode("utf-8", errors="replace")


def chat_content(entries: Sequence[TokenLogprob], piece: Piece) -> list[dict[str, Any]]:
    """Chat's ``logprobs.content`` items."""
    out = []
    for entry in entries:
        out.append(
            {
                "token": _text(piece, entry.token),
                "logprob": entry.logprob,
                "bytes": list(piece(entry.token)),
                "top_logprobs": [
                    {"token": _text(piece, t), "logprob": lp, "bytes": list(piece(t))}
                    for t, lp in entry.top
                ],
            }
        )
    return out


def completion_logprobs(
    entries: Sequence[TokenLogprob], piece: Piece, offset: int
) -> dict[str, Any]:
    """The legacy completions shape; ``offset`` is where the first token's text starts."""
    tokens, offsets, tops = [], [], []
    for entry in entries:
        text = _text(piece, entry.token)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        tops.append({_text(piece, t): lp for t, lp in entry.top})
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": tops,
        "text_offset": offsets,
    }

"""Grammar-constrained sampling: GBNF from JSON schemas, checked the cheap way.

Schemas become GBNF through llama-cpp-python's converter (the one llama.cpp's
own tools use); the grammar itself is llama.cpp's grammar sampler. Applying a
grammar to the whole vocabulary every step is what makes constrained sampling
slow, so :class:`Grammar` does what llama.cpp's common sampler does: sample
with the ordinary chain first, check only the chosen token against the
grammar, and only when it is rejected apply the grammar to every candidate and
sample again. Requests without a grammar never reach this module.

llama.cpp parses GBNF recursively, one C++ call per nested group, so a grammar
of a million ``(`` would overflow the runtime's stack and kill it: groups nested
deeper than :data:`MAX_NESTING` are refused before llama.cpp sees the grammar.
"""

from __future__ import annotations

import ctypes
import json
import re
from typing import Any

import numpy as np

from modelserve.runtime.llama_model import LlamaModel

ROOT = "root"
_NOT_GROUPING = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')
"""Literals, character classes and comments: their parentheses group nothing."""
MAX_NESTING = 64
"""Parenthesised groups nested this deep at most (schema-made grammars nest a few)."""
# The data layout of llama_token_data: id, logit, p.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class GrammarError(ValueError):
    """A grammar (or schema) llama.cpp cannot use."""


def json_object_grammar() -> str:
    """Any JSON object (``response_format: {"type": "json_object"}``)."""
    from llama_cpp.llama_grammar import JSON_GBNF

    return JSON_GBNF


def schema_rules(schema: dict[str, Any], name: str) -> str:
    """GBNF rules matching ``schema``, the top one called ``name`` ("" makes it root)."""
    from llama_cpp import llama_grammar

    make: Any = llama_grammar.SchemaConverter  # untyped upstream
    converter = make(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "input")
        converter.visit(resolved, name)
    except (AssertionError, AttributeError, KeyError, RecursionError, TypeError, ValueError) as exc:
        raise GrammarError(f"the JSON schema cannot be turned into a grammar: {exc}") from exc
    # JSON strings may not hold raw control characters; this converter's ``char`` allows them
    rules: str = converter.format_grammar().replace(
        'char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'
    )
    return rules


def schema_grammar(schema: dict[str, Any]) -> str:
    """A grammar whose sentences are exactly the JSON documents valid under ``schema``."""
    return schema_rules(schema, "")


def nesting_depth(gbnf: str) -> int:
    """The deepest ``(`` nesting of a GBNF text (literals, classes and comments skipped)."""
    code = np.frombuffer(_NOT_GROUPING.sub("", gbnf).encode(), dtype=np.uint8)
    if code.size == 0:
        return 0
    steps = (code == ord("(")).astype(np.int32) - (code == ord(")")).astype(np.int32)
    return int(np.cumsum(steps).max())


def check_nesting(gbnf: str) -> None:
    """GrammarError for a grammar nested deeper than llama.cpp's parser can safely take."""
    if nesting_depth(gbnf) > MAX_NESTING:
        raise GrammarError(f"the grammar nests groups deeper than {MAX_NESTING} levels")


class Grammar:
    """One sequence's llama.cpp grammar sampler and the buffers to check tokens with."""

    def __init__(self, model: LlamaModel, gbnf: str) -> None:
        from llama_cpp import llama_cpp as lib

        self._lib = lib
        self.n_vocab = model.n_vocab
        check_nesting(gbnf)
        self._sampler = lib.llama_sampler_init_grammar(model.vocab, gbnf.encode(), ROOT.encode())
        if not self._sampler:
            raise GrammarError("the grammar does not parse (llama.cpp refused it)")
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._all = np.zeros(self.n_vocab, dtype=TOKEN_DATA)
        self._one = np.zeros(1, dtype=TOKEN_DATA)
        pointer = ctypes.POINTER(lib.llama_token_data)
        self._all_data = self._all.ctypes.data_as(pointer)  # made once: a few us each
        self._one_data = self._one.ctypes.data_as(pointer)
        self._all_array: Any = lib.llama_token_data_array(
            data=self._all_data, size=self.n_vocab, selected=-1, sorted=False
        )
        self._one_array: Any = lib.llama_token_data_array(
            data=self._one_data, size=1, selected=-1, sorted=False
        )

    def allows(self, token: int) -> bool:
        """Whether the grammar, in its current state, accepts ``token`` next."""
        self._one[0] = (token, 0.0, 0.0)
        array = self._one_array
        array.data, array.size, array.selected = self._one_data, 1, -1
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(self._one_array))
        return bool(np.isfinite(self._one[0]["logit"]))

    def sample(self, chain: Any, ctx: Any, row: int) -> int:
        """Sample row ``row`` with ``chain``, resampling under the grammar only if needed."""
        lib = self._lib
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, row), shape=(self.n_vocab,))
        token = self._apply(chain, logits, constrained=False)
        if not self.allows(token):
            token = self._apply(chain, logits, constrained=True)
        lib.llama_sampler_accept(self._sampler, token)
        lib.llama_sampler_accept(chain, token)
        return token

    def _apply(self, chain: Any, logits: np.ndarray, *, constrained: bool) -> int:
        lib = self._lib
        self._all["id"] = self._ids  # samplers sort the array in place
        self._all["logit"] = logits
        self._all["p"] = 0.0
        array = self._all_array
        array.data, array.size = self._all_data, self.n_vocab  # samplers may move them
        array.selected, array.sorted = -1, False
        if constrained:
            lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        lib.llama_sampler_apply(chain, ctypes.byref(array))
        if array.selected < 0:
            raise GrammarError("no token fits the grammar here")
        return int(array.data[array.selected].id)

    def close(self) -> None:
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None

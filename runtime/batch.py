"""A llama_batch whose arrays belong to numpy, so filling it is slicing.

``llama_batch_init`` allocates one small ``seq_id`` array per row; writing a
batch through it costs a ctypes call per field and row (1-2 us a token). Here
the struct points into numpy arrays allocated once: the ``seq_id`` pointers are
set up a single time to point at consecutive elements of one int32 array, so a
prompt chunk of any length is written with four slice assignments. The struct
is never handed to ``llama_batch_free`` (numpy owns the memory).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.int32]


class TokenBatch:
    """Up to ``capacity`` (= the context's ``n_batch``) rows of one sequence each."""

    def __init__(self, capacity: int) -> None:
        from llama_cpp import llama_cpp as lib

        self.capacity = capacity
        self.size = 0
        self.tokens = np.zeros(capacity, dtype=np.int32)
        self.positions = np.zeros(capacity, dtype=np.int32)
        self.sequences = np.zeros(capacity, dtype=np.int32)
        self.outputs = np.zeros(capacity, dtype=np.int8)
        self._n_seq_id = np.ones(capacity, dtype=np.int32)
        itemsize = self.sequences.itemsize
        self._row_pointers = np.arange(capacity, dtype=np.uintp) * itemsize
        self._row_pointers += self.sequences.ctypes.data
        pointer_array = ctypes.POINTER(lib.llama_seq_id) * capacity
        seq_id = pointer_array.from_buffer(self._row_pointers.data)
        self._struct: Any = lib.llama_batch(
            n_tokens=0,
            token=self.tokens.ctypes.data_as(ctypes.POINTER(lib.llama_token)),
            embd=None,
            pos=self.positions.ctypes.data_as(ctypes.POINTER(lib.llama_pos)),
            n_seq_id=self._n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=seq_id,
            logits=self.outputs.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        self._seq_id = seq_id  # the struct holds a raw pointer to it

    @property
    def room(self) -> int:
        return self.capacity - self.size

    def clear(self) -> None:
        self.size = 0

    def add(
        self,
        sequence: int,
        tokens: Tokens,
        start: int,
        *,
        output_last: bool,
        output_all: bool = False,
    ) -> int:
        """Rows for ``tokens`` at positions ``start...``; returns the last row's index."""
        count = len(tokens)
        if count == 0 or count > self.room:
            raise ValueError(f"{count} tokens do not fit the batch ({self.room} rows left)")
        begin, end = self.size, self.size + count
        self.tokens[begin:end] = tokens
        self.positions[begin:end] = np.arange(start, start + count, dtype=np.int32)
        self.sequences[begin:end] = sequence
        self.outputs[begin:end] = 1 if output_all else 0
        if output_last:
            self.outputs[end - 1] = 1
        self.size = end
        return end - 1

    def add_next(self, sequences: Tokens, tokens: Tokens, positions: Tokens) -> int:
        """One sampled row per generating sequence, all outputs; returns the first row."""
        count = len(tokens)
        if count > self.room:
            raise ValueError(f"{count} tokens do not fit the batch ({self.room} rows left)")
        begin, end = self.size, self.size + count
        self.tokens[begin:end] = tokens
        self.positions[begin:end] = positions
        self.sequences[begin:end] = sequences
        self.outputs[begin:end] = 1
        self.size = end
        return begin

    def struct(self) -> Any:
        """The llama_batch to pass to llama_decode (valid until the next ``add``)."""
        self._struct.n_tokens = self.size
        return self._struct

"""The generated recurrent and hybrid GGUFs load in llama.cpp as those kinds of memory.

They stand in for real Mamba/RWKV and Jamba/Granite-H/Qwen3-Next/LFM2 models in
the engine's tests, so first: llama.cpp must see them as recurrent or hybrid,
decode several sequences in one batch and generate finite logits. Then the
memory behaviours the engine has to work around are pinned here, where a change
in llama.cpp shows first: a recurrent state cannot be cut back to a position,
and ``llama_memory_seq_cp`` copies a recurrent state whole, whatever range it
is given.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from modelserve.runtime.batch import TokenBatch
from modelserve.runtime.llama_model import LlamaModel
from modelserve.shared.gguf_synth import PRESETS, emitting_tokens, write_synthetic_gguf

# preset -> (llama_model_is_recurrent, llama_model_is_hybrid)
KINDS = {"tiny": (False, False), "mamba": (True, False), "hybrid": (False, True)}
N_BATCH = 128


@pytest.fixture(scope="module", params=list(KINDS))
def model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaModel]:
    preset = request.param
    path = write_synthetic_gguf(tmp_path_factory.mktemp("models") / f"{preset}.gguf", preset)
    loaded = LlamaModel(path, n_gpu_layers=0)
    yield loaded
    loaded.close()


def preset_of(model: LlamaModel) -> str:
    return model.path.stem


class Session:
    """A context of four sequences (unified memory, as the engine makes it) to drive by hand."""

    def __init__(self, model: LlamaModel) -> None:
        from llama_cpp import llama_cpp as lib

        self.lib = lib
        self.model = model
        self.ctx = model.new_context(n_ctx=256, n_batch=N_BATCH, n_seq_max=4, n_threads=2)
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = TokenBatch(N_BATCH)

    def submit(self, rows: dict[int, tuple[list[int], int]]) -> tuple[int, dict[int, int]]:
        """Decode ``{sequence: (tokens, first position)}`` in one batch: llama_decode's
        code and the row of each sequence's last token."""
        self.batch.clear()
        last = {
            sequence: self.batch.add(
                sequence, np.array(tokens, dtype=np.int32), start, output_last=True
            )
            for sequence, (tokens, start) in rows.items()
        }
        return int(self.lib.llama_decode(self.ctx, self.batch.struct())), last

    def decode(self, rows: dict[int, tuple[list[int], int]]) -> dict[int, np.ndarray]:
        """As ``submit``, which must succeed; the last logits of each sequence."""
        code, last = self.submit(rows)
        assert code == 0, f"llama_decode returned {code}"
        return {sequence: self.logits(row) for sequence, row in last.items()}

    def logits(self, row: int) -> np.ndarray:
        pointer = self.lib.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.model.n_vocab,)).copy()

    def pos_max(self, sequence: int) -> int:
        return int(self.lib.llama_memory_seq_pos_max(self.memory, sequence))

    def close(self) -> None:
        self.model.free_context(self.ctx)


@pytest.fixture
def session(model: LlamaModel) -> Iterator[Session]:
    opened = Session(model)
    yield opened
    opened.close()


def prompt(model: LlamaModel, text: str) -> list[int]:
    return [int(t) for t in model.tokenize(text, add_bos=True, special=False)]


def test_memory_kind(model: LlamaModel) -> None:
    from llama_cpp import llama_cpp as lib

    recurrent, hybrid = KINDS[preset_of(model)]
    assert bool(lib.llama_model_is_recurrent(model.model)) is recurrent
    assert bool(lib.llama_model_is_hybrid(model.model)) is hybrid
    assert lib.llama_model_n_swa(model.model) == 0


def test_batch_of_sequences_decodes_and_generates(model: LlamaModel, session: Session) -> None:
    # two prompts of different lengths in one batch, then eight greedy steps of both
    prompts = {0: prompt(model, "Hello, world"), 1: prompt(model, "A longer prompt here")}
    logits = session.decode({s: (tokens, 0) for s, tokens in prompts.items()})
    positions = {s: len(tokens) for s, tokens in prompts.items()}
    emitting = set(emitting_tokens(PRESETS[preset_of(model)].letters))
    generated: dict[int, list[int]] = {0: [], 1: []}
    for _ in range(8):
        for sequence, row in logits.items():
            assert np.isfinite(row).all(), f"{preset_of(model)}: logits not finite"
            assert float(row.std()) > 0  # the context reaches the output
            token = int(row.argmax())
            assert token in emitting
            generated[sequence].append(token)
        logits = session.decode({s: ([generated[s][-1]], positions[s]) for s in logits})
        positions = {s: p + 1 for s, p in positions.items()}
    assert session.pos_max(0) == len(prompts[0]) + 7
    assert session.pos_max(1) == len(prompts[1]) + 7


def test_state_is_cut_back_only_whole(model: LlamaModel, session: Session) -> None:
    """A recurrent state holds no earlier positions: cutting a sequence's tail is refused
    (this llama.cpp rolls back only architectures that keep snapshots, ``n_rs_seq``,
    and Mamba/Jamba are not among them), removing the whole sequence works."""
    recurrent, hybrid = KINDS[preset_of(model)]
    tokens = prompt(model, "Hello, world")
    session.decode({0: (tokens, 0)})
    lib = session.lib
    cut = bool(lib.llama_memory_seq_rm(session.memory, 0, 4, -1))
    assert cut is not (recurrent or hybrid)
    assert session.pos_max(0) == (len(tokens) - 1 if recurrent or hybrid else 3)
    assert lib.llama_memory_seq_rm(session.memory, 0, -1, -1)
    assert session.pos_max(0) == -1


def test_state_carries_the_context(model: LlamaModel, session: Session) -> None:
    """Two prompts that end in the same 12 tokens get different next-token logits: what
    came before reaches the output (through the state, for Mamba), so a state handed
    to the wrong request shows in its text."""
    ending = " the brown fox"
    logits = session.decode(
        {
            0: (prompt(model, "Hello, world." + ending), 0),
            1: (prompt(model, "Bye, moon!" + ending), 0),
        }
    )
    assert float(np.abs(logits[0] - logits[1]).max()) > 0.5


def test_copy_of_a_prefix(model: LlamaModel, session: Session) -> None:
    """``seq_cp`` given the range of the first 4 positions.

    Attention: those 4 cells are copied, and the copy continues as a fresh prefill
    of those 4 tokens does. Recurrent: the state is copied whole (it ends where the
    source ends), so continuing at position 4 is refused and at the source's end
    it continues as the source does. Hybrid: the KV part gets 4 cells, the
    recurrent part the whole state; the copy says its last position is 3,
    continuing at 4 is accepted (llama.cpp only logs "non-consecutive token
    position") and what comes out has the source's later tokens leaked in.
    """
    recurrent, hybrid = KINDS[preset_of(model)]
    tokens = prompt(model, "Hello, world")
    n, following = len(tokens), prompt(model, "a")[-1]
    session.decode({0: (tokens, 0)})
    session.lib.llama_memory_seq_cp(session.memory, 0, 1, 0, 4)
    assert session.pos_max(1) == (n - 1 if recurrent else 3)
    if recurrent:
        assert session.submit({1: ([following], 4)})[0] != 0
        after = session.decode({0: ([following], n), 1: ([following], n)})
        np.testing.assert_allclose(after[0], after[1], rtol=1e-4, atol=1e-4)
        return
    copied = session.decode({1: ([following], 4)})[1]
    fresh = Session(model)
    try:
        reference = fresh.decode({0: ([*tokens[:4], following], 0)})[0]
    finally:
        fresh.close()
    difference = float(np.abs(copied - reference).max())
    if hybrid:
        assert difference > 0.01  # the whole recurrent state came along
    else:
        assert difference < 1e-3

"""The engine's pure parts: streamed text, kept sequences, slot defaults."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.runtime.config import RuntimeConfigError, build_config
from modelserve.runtime.prefix_cache import PrefixCache, common_prefix
from modelserve.runtime.text import TextStream
from modelserve.shared.slots import n_parallel_of


def stream(stops: list[str], pieces: list[bytes]) -> tuple[list[str], bool]:
    text = TextStream(stops)
    out = [text.push(p) for p in pieces]
    out.append(text.finish())
    return out, text.stopped


def test_utf8_split_across_tokens_is_released_whole() -> None:
    euro = "€".encode()
    out, _ = stream([], [b"a", euro[:1], euro[1:2], euro[2:], b"b"])
    assert out == ["a", "", "", "€", "b", ""]


def test_invalid_bytes_become_replacement_characters() -> None:
    out, _ = stream([], [b"\xff", b"ok", b"\xe2\x82"])
    assert "".join(out) == "\ufffdok\ufffd"


def test_stop_string_straddling_tokens_is_cut_and_held_back() -> None:
    out, stopped = stream(["STOP"], [b"abc S", b"T", b"OP and more"])
    assert out == ["abc ", "", "", ""]
    assert stopped


def test_a_partial_stop_that_does_not_complete_is_released() -> None:
    out, stopped = stream(["STOP"], [b"ST", b"ART"])
    assert "".join(out) == "START"
    assert out[0] == ""  # held while it could still become STOP
    assert not stopped


def test_earliest_of_several_stops_wins() -> None:
    out, _ = stream(["yz", "b"], [b"abxyz"])
    assert out[0] == "a"


def test_common_prefix() -> None:
    a = np.array([1, 2, 3, 4], dtype=np.int32)
    assert common_prefix(a, np.array([1, 2, 9], dtype=np.int32)) == 2
    assert common_prefix(a, a[:2]) == 2
    assert common_prefix(a, np.array([5], dtype=np.int32)) == 0


def ids(*tokens: int) -> np.ndarray:
    return np.array(tokens, dtype=np.int32)


def test_prefix_cache_picks_the_longest_match_and_evicts_the_oldest() -> None:
    cache = PrefixCache(2)
    assert cache.put(0, ids(1, 2, 3, 4, 5)) == []
    assert cache.put(1, ids(1, 2, 3, 4, 5, 6, 7)) == []
    match = cache.best(ids(1, 2, 3, 4, 5, 6, 9, 9))
    assert match is not None and (match.sequence, match.length, match.whole) == (1, 6, False)
    assert cache.cells == 12
    assert cache.put(2, ids(7)) == [0]  # least recently kept
    assert cache.cells == 8
    cache.take(1)
    assert cache.cells == 1 and len(cache) == 1


def test_prefix_cache_always_leaves_the_last_prompt_token_to_decode() -> None:
    cache = PrefixCache(1)
    cache.put(3, ids(1, 2, 3, 4, 5))
    match = cache.best(ids(1, 2, 3, 4, 5))
    assert match is not None and (match.length, match.whole) == (4, False)
    whole = cache.best(ids(1, 2, 3, 4, 5, 6))
    assert whole is not None and (whole.length, whole.whole) == (5, True)


def test_a_prefix_too_short_to_matter_is_no_match() -> None:
    """Every prompt starts with BOS, most chats with the template's preamble: sharing
    that is no reason to touch a kept sequence (nor to report it cached)."""
    cache = PrefixCache(2)
    cache.put(0, ids(1, 50, 51, 52, 53, 54))
    assert cache.best(ids(1, 60, 61)) is None  # BOS only
    assert cache.best(ids(1, 50, 51, 70)) is None  # under the minimum
    long_prompt = ids(1, 50, 51, 52, 53, *range(100, 160))  # 5 of 65: under a tenth
    assert cache.best(long_prompt) is None
    match = cache.best(ids(1, 50, 51, 52, 53, 80, 81))
    assert match is not None and match.length == 5


def test_recurrent_memory_only_continues_whole_sequences() -> None:
    cache = PrefixCache(2)
    cache.put(0, ids(1, 2, 3, 4, 5, 6))
    assert cache.best(ids(1, 2, 3, 4, 5, 9, 9), whole_only=True) is None
    match = cache.best(ids(1, 2, 3, 4, 5, 6, 7), whole_only=True)
    assert match is not None and match.whole


def test_cells_a_kept_sequence_shares_with_another_count_once() -> None:
    cache = PrefixCache(3)
    cache.put(0, ids(*range(1, 11)))  # 10 cells
    cache.put(1, ids(*range(1, 7), 90, 91), share=(0, 6))  # copied 6 of them
    assert cache.cells == 12
    cache.take(0)  # the shared 6 are now sequence 1's alone
    assert cache.cells == 8
    cache.put(2, ids(5, 5, 5, 5), share=(7, 2))  # a donor not kept shares nothing
    assert cache.cells == 12


def test_disabled_prefix_cache_keeps_nothing() -> None:
    cache = PrefixCache(0)
    assert cache.put(5, np.array([1], dtype=np.int32)) == [5]
    assert len(cache) == 0


def test_slots_default_by_device_and_bound_the_sequences() -> None:
    assert build_config(model="m").slots() == 4
    assert build_config(model="m", n_gpu_layers=-1).slots() == 16
    config = build_config(model="m", n_parallel=3)
    assert (config.slots(), config.cached_sequences()) == (3, 3)
    assert build_config(model="m", n_parallel=3, prefix_cache=0).cached_sequences() == 0
    with pytest.raises(RuntimeConfigError, match=r"exceeds llama\.cpp's 256 sequences"):
        build_config(model="m", n_parallel=200, prefix_cache=100)


def test_kserve_and_runtime_agree_on_slots() -> None:
    assert n_parallel_of({}, gpus=0) == build_config(model="m").slots()
    assert n_parallel_of({}, gpus=1) == build_config(model="m", n_gpu_layers=-1).slots()
    assert n_parallel_of({"n_parallel": "7"}, gpus=1) == 7
    assert n_parallel_of({"n_gpu_layers": 0}, gpus=1) == 4

"""The engine's pure parts: streamed text, kept sequences, slot defaults."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from modelserve.runtime.config import RuntimeConfigError, build_config
from modelserve.runtime.cpu_quota import available_cpus, cgroup_cpu_limit
from modelserve.runtime.prefix_cache import PrefixCache, common_prefix
from modelserve.runtime.reasoning import HARMONY, THINK, ReasoningStream, reasoning_syntax
from modelserve.runtime.text import TextStream
from modelserve.runtime.tools import GENERIC, ToolCallStream, syntax_for
from modelserve.shared.gguf_synth import write_synthetic_gguf
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


# -- reasoning split ---------------------------------------------------------------------


def split(stream: ReasoningStream, text: str, step: int) -> tuple[str, str]:
    """(reasoning, content) of ``text`` pushed ``step`` characters at a time."""
    thought = content = ""
    for at in range(0, len(text), step):
        more, answer = stream.push(text[at : at + step])
        thought, content = thought + more, content + answer
    more, answer = stream.finish()
    return thought + more, content + answer


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_think_blocks_split_the_same_in_any_pieces(step: int) -> None:
    text = "<think>\nStep one.\n</think>\n\nThe answer."
    assert split(THINK.stream("<|im_start|>assistant\n"), text, step) == (
        "Step one.\n",
        "The answer.",
    )
    # the template opened the block: the model starts inside it
    opened = THINK.stream("<\uff5cAssistant\uff5c><think>\n")
    assert split(opened, "Hmm.</think>Yes.", step) == ("Hmm.", "Yes.")
    # <think> not at the start is text; an unclosed block is all reasoning
    assert split(THINK.stream(""), "I <think> so", step) == ("", "I <think> so")
    assert split(THINK.stream(""), "<think>still going", step) == ("still going", "")


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_harmony_channels_split_analysis_from_final(step: int) -> None:
    text = (
        "<|channel|>analysis<|message|>Think.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Answer."
    )
    assert split(HARMONY.stream("<|start|>assistant"), text, step) == ("Think.", "Answer.")
    assert split(HARMONY.stream(""), "plain text", step) == ("", "plain text")


def test_reasoning_syntax_comes_from_the_template() -> None:
    assert reasoning_syntax("{{ '<think>' }}...{{ '</think>' }}") is THINK
    assert reasoning_syntax("<|start|>assistant<|channel|>final<|message|>") is HARMONY
    assert reasoning_syntax("<|im_start|>assistant") is None


# -- the generic tool-call format ------------------------------------------------------


def test_the_generic_format_parses_calls_and_responses() -> None:
    names = frozenset({"get_time"})
    written = '{"tool_calls": [{"name": "get_time", "arguments": {"zone": "UTC"}}]}'
    stream = ToolCallStream(GENERIC, names)
    content = "".join(stream.push(c)[0] for c in written) + stream.finish()
    assert content == ""
    assert [c["function"]["arguments"] for c in stream.calls] == ['{"zone": "UTC"}']
    stream = ToolCallStream(GENERIC, names)
    assert stream.push('{"response": "Hello."}') == ("Hello.", [])
    stream = ToolCallStream(GENERIC, names)
    assert stream.push("Plain text.")[0] == "Plain text."
    assert syntax_for("{{ messages }}") is GENERIC


# -- threads from the cgroup's CPU quota -----------------------------------------------


def cgroup(tmp_path: Path, files: dict[str, str], own: str = "0::/\n") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text(own)
    return root, self_cgroup


def test_the_cpu_quota_comes_from_cgroup_v2_and_v1(tmp_path: Path) -> None:
    v2 = cgroup(tmp_path / "v2", {"cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit(*v2) == 1.5
    assert available_cpus(*v2) == min(2, os.cpu_count() or 1)
    nested = cgroup(tmp_path / "nested", {"pod/cpu.max": "100000 100000"}, "0::/pod\n")
    assert cgroup_cpu_limit(*nested) == 1.0
    assert available_cpus(*nested) == 1
    unlimited = cgroup(tmp_path / "max", {"cpu.max": "max 100000"})
    assert cgroup_cpu_limit(*unlimited) is None
    assert available_cpus(*unlimited) == len(os.sched_getaffinity(0))
    v1 = cgroup(
        tmp_path / "v1",
        {"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
        "4:cpu,cpuacct:/\n",
    )
    assert cgroup_cpu_limit(*v1) == 0.5
    assert available_cpus(*v1) == 1
    none = cgroup(
        tmp_path / "v1-none", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "1"}
    )
    assert cgroup_cpu_limit(*none) is None


def test_contexts_take_their_threads_from_the_quota(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a node with more cores than the pod's limit, llama.cpp gets the limit."""
    from llama_cpp import llama_cpp as lib

    from modelserve.runtime import cpu_quota
    from modelserve.runtime.llama_model import LlamaModel

    root, own = cgroup(tmp_path, {"cpu.max": "100000 100000"})
    monkeypatch.setattr(cpu_quota, "CGROUP_ROOT", root)
    monkeypatch.setattr(cpu_quota, "SELF_CGROUP", own)
    model = LlamaModel(tiny_model, n_gpu_layers=0)
    try:
        ctx = model.new_context(n_ctx=256, n_batch=64, n_seq_max=1, n_threads=None)
        assert (lib.llama_n_threads(ctx), lib.llama_n_threads_batch(ctx)) == (1, 1)
        model.free_context(ctx)
    finally:
        model.close()


# -- KV cache types --------------------------------------------------------------------


def test_kv_cache_types_reach_the_context(tmp_path: Path) -> None:
    """A q8_0 cache holds the same tokens in about half an f16 cache's bytes."""
    from llama_cpp import llama_cpp as lib

    from modelserve.runtime.llama_model import LlamaModel

    path = write_synthetic_gguf(tmp_path / "mini.gguf", "mini")  # 32-wide heads: q8_0 blocks
    sizes = {}
    for kind in ("f16", "q8_0"):
        model = LlamaModel(path, n_gpu_layers=0, type_k=kind, type_v=kind)
        try:
            ctx = model.new_context(n_ctx=256, n_batch=64, n_seq_max=1, n_threads=1)
            tokens = model.tokenize("a" * 40, add_bos=True, special=False)
            ids = (lib.llama_token * len(tokens))(*map(int, tokens))  # kept alive: the batch
            batch = lib.llama_batch_get_one(ids, len(tokens))  # points into it
            assert lib.llama_decode(ctx, batch) == 0
            sizes[kind] = lib.llama_state_seq_get_size(ctx, 0)
            model.free_context(ctx)
        finally:
            model.close()
    assert sizes["q8_0"] < 0.6 * sizes["f16"], sizes

"""The continuous-batching loop: one thread, one llama_context, every request each step.

Each step the engine thread (the only one that touches the generation context):

1. drops requests whose client left and runs queued side jobs (embeddings);
2. starts queued requests while a slot is free and the KV cache can hold their
   prompt, continuing a kept sequence when one shares the prompt's prefix;
3. builds one batch: the last sampled token of every generating request, then
   prompt chunks of requests still in prefill, never more than ``n_batch`` rows;
4. calls ``llama_decode`` once and samples each request's own row with its own
   sampler chain; text, ends and usage go back to the event loop in one call.

A request for ``n`` choices is one group: its first job prefills the prompt
once, and at the step its last prompt token is decoded the other jobs get a
copy of that sequence's KV (``llama_memory_seq_cp``, which in the unified
cache shares the cells) and sample their first token from the same logits.

A request that shares a prompt prefix with one already running (a burst of
requests with one system prompt) rides on it: it waits until the running one
has prefilled that prefix, copies those cells, and prefills only the rest, so a
prefix that arrives eight times at once is computed once.

A request that ends (end of generation, stop string, ``max_tokens``, context
length, client gone) frees its slot at once; its sequence stays in the KV cache
for prefix reuse while there is room (``prefix_cache.py`` says which matches
are used). When the cache is full, kept sequences are evicted first and then
one request at a time, the one holding the most cells, is ended with
``finish_reason: "length"``; a request ended for room, or ending while room is
short, leaves nothing in the cache. The process never dies of it.

What may be reused depends on the model's memory (``MemoryKind``). A plain KV
cache is cut and copied by position. A sliding-window cache recycles cells that
fell out of a sequence's window, so every reuse (a kept prefix, a ride) is
checked with ``llama_memory_seq_pos_min``: a prefix whose window is gone is
prefilled again and reported as not cached. A recurrent or hybrid state is one
whole thing: it is continued only from its end (a kept sequence that is wholly
a prefix of the prompt) or copied whole at a token boundary (the ``n`` choices
of one prompt); nothing rides on a running request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelserve.runtime.batch import TokenBatch, Tokens
from modelserve.runtime.grammar import Grammar
from modelserve.runtime.llama_model import LlamaModel, MemoryKind
from modelserve.runtime.logprobs import TokenLogprob, from_logits
from modelserve.runtime.metrics import RuntimeMetrics
from modelserve.runtime.prefix_cache import Match, PrefixCache, common_prefix
from modelserve.runtime.sampling import SamplerChain, SamplingParams
from modelserve.runtime.scheduler import Scheduler
from modelserve.runtime.text import TextStream

log = logging.getLogger(__name__)

DECODE_OK, DECODE_NO_KV_SLOT, DECODE_ABORTED = 0, 1, 2
MAX_RETRIES = 3
MIN_RIDE_TOKENS = 8  # a shorter shared prefix is cheaper to prefill than to wait for


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass(frozen=True)
class Event:
    """What the engine tells a request: ``started``, ``text``, ``end``, ``error``, or
    ``refused`` (it was still queued when the server began to stop)."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None
    index: int = 0
    """Which choice of the request the event belongs to."""
    logprobs: tuple[TokenLogprob, ...] = ()
    """The tokens behind ``text``, when the request asked for log-probabilities."""


class Channel:
    """Events from the engine thread into one request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()


@dataclass(eq=False)
class Job:
    """One choice of a generation request, from the queue to its end.

    The first choice of a group is the one queued; ``followers`` (the other
    choices of the same prompt) start with it and share its prefilled prompt.
    """

    prompt: Tokens
    sampling: SamplingParams
    stops: list[str]
    max_tokens: int | None
    channel: Channel
    index: int = 0
    scope: str = ""  # whose prompt: reuse stays within one (shared/cache_scope.py)
    gbnf: str | None = None
    logprobs: int | None = None  # None: not asked; else how many alternatives
    followers: list[Job] = field(default_factory=list)
    head: Job | None = None  # the group's first job (None: this one)
    waiting_on: Job | None = None  # a follower whose prompt is not copied yet
    riding: Job | None = None  # a running job whose prefilled prefix this one will copy
    ride: int = 0  # how many prompt tokens come from ``riding``
    donor: Job | None = None  # the job whose cells ``shared`` counts, once copied
    kept_donor: int = -1  # or the kept sequence whose cells ``shared`` counts
    open_members: int = 0
    shared: int = 0  # cells of the prompt a follower shares with its leader
    pending: list[TokenLogprob] = field(default_factory=list)
    arrived: float = field(default_factory=time.monotonic)
    started_at: float | None = None  # left the queue (the trace's queue and prefill spans)
    first_token_at: float | None = None
    cancelled: bool = False
    sequence: int = -1
    n_past: int = 0  # tokens whose KV is in the cache
    cached: int = 0
    generated: list[int] = field(default_factory=list)
    chain: SamplerChain | None = None
    text: TextStream | None = None
    last_token_at: float | None = None
    row: int = -1  # batch row sampled this step, -1 when none
    chunk: int = 0  # tokens this job has in the current batch

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.prompt)

    def kv_tokens(self) -> Tokens:
        """The tokens whose keys and values the job's sequence holds."""
        if not self.generated:
            return self.prompt[: self.n_past]
        whole = np.concatenate([self.prompt, np.asarray(self.generated, dtype=np.int32)])
        return whole[: self.n_past]


class BatchedEngine:
    """Owns the generation context and the thread that drives it."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        n_ctx: int,
        n_batch: int,
        slots: int,
        cached_sequences: int,
        max_queue: int,
        n_threads: int | None,
        metrics: RuntimeMetrics,
    ) -> None:
        from llama_cpp import llama_cpp as lib

        self._lib = lib
        self.model = model
        self.metrics = metrics
        self.slots = slots
        self.memory = model.memory
        self._ranges = model.memory.cuts_ranges
        self.ctx = model.new_context(
            n_ctx=n_ctx, n_batch=n_batch, n_seq_max=slots + cached_sequences, n_threads=n_threads
        )
        self._memory = lib.llama_get_memory(self.ctx)
        self.n_ctx = int(lib.llama_n_ctx(self.ctx))
        self.n_batch = int(lib.llama_n_batch(self.ctx))
        self.scheduler: Scheduler[Job] = Scheduler(slots, max_queue, self._queue_changed)
        self._batch = TokenBatch(self.n_batch)
        self._cache = PrefixCache(cached_sequences)
        self._free_sequences = list(range(slots + cached_sequences - 1, -1, -1))
        self._active: list[Job] = []
        self._side_jobs: deque[Callable[[], None]] = deque()
        self._outbox: list[tuple[Job, Event]] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._short = False  # room ran short this step: ended requests keep nothing
        metrics.slots_total.set(slots)
        metrics.kv_cells_total.set(self.n_ctx)
        self._thread = threading.Thread(target=self._run, name="llama-engine", daemon=True)
        self._thread.start()

    # -- called from the event loop --------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job`` and its followers (QueueFull when slots and queue are taken)."""
        for follower in job.followers:
            follower.head = job
        job.open_members = 1 + len(job.followers)
        self.scheduler.offer(job, cost=job.open_members)
        self._notify()

    def cancel(self, job: Job) -> None:
        """Stop ``job``'s group: queued, it leaves the queue; running, it ends next step.

        Either way each member's channel gets an ``end`` event (finish reason
        None), so a reader waiting on it is released. Call it from the job's
        event loop.
        """
        members = [job, *job.followers]
        if self.scheduler.withdraw(job):
            for member in members:
                member.channel.queue.put_nowait(Event("end", index=member.index))
        elif not all(m.cancelled for m in members):
            for member in members:
                member.cancelled = True
            self._notify()

    def refuse_queued(self, reason: str) -> None:
        """Shutting down: the queue is emptied at once (each waiting client gets a 503 with
        ``reason``) and nothing more is admitted. Call it from the jobs' event loop."""
        for job in self.scheduler.close(reason):
            job.channel.queue.put_nowait(Event("refused", error=reason))

    def fail_running(self, reason: str) -> None:
        """End every running request with an error (its stream says ``reason``)."""

        def fail() -> None:
            for job in list(self._active):
                self._fail(job, reason)

        self.run_between_steps(fail)

    def run_between_steps(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the engine thread between two decode steps."""
        with self._wake:
            self._side_jobs.append(work)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()
        self._lib.llama_free(self.ctx)

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify()

    # -- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._has_work():
                    self._wake.wait()
                if self._stopping:
                    break
                side_jobs = list(self._side_jobs)
                self._side_jobs.clear()
            try:
                for work in side_jobs:
                    work()
                self._drop_cancelled()
                self._admit()
                if self._active:
                    self._step()
            except Exception as exc:  # never let the thread die: fail what ran, carry on
                log.exception("engine step failed")
                for job in list(self._active):
                    self._fail(job, f"generation failed: {exc}")
                self._lib.llama_memory_clear(self._memory, True)
                self._reset_cache()
            finally:
                self._flush()
        for job in list(self._active):
            self._fail(job, "the server is shutting down")
        self._flush()

    def _has_work(self) -> bool:
        return bool(self._active or self._side_jobs or self.scheduler.peek() is not None)

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._active if j.cancelled]:
            self._finish(job, None)

    def _admit(self) -> None:
        """Start queued requests, first come first served, while slots and KV allow."""
        while (job := self.scheduler.peek()) is not None:
            if job.cancelled:
                self.scheduler.withdraw(job)
                continue
            match = self._cache.best(job.prompt, scope=job.scope, whole_only=not self._ranges)
            reused = match.length if match else 0
            donor, ride = self._donor(job) if self._ranges else (None, 0)
            if ride <= reused:  # a kept sequence serves as well, without waiting
                donor, ride = None, 0
            committed = sum(len(j.prompt) - j.shared + len(j.generated) for j in self._active)
            wanted = len(job.prompt) - max(reused, ride) + 1 + len(job.followers)
            if committed + wanted > self.n_ctx and self._active:
                self.scheduler.hold()  # free slots lend no queue places meanwhile
                break  # wait for running requests to free cells
            if self.scheduler.start(job):  # False: its client left just now
                if donor is not None:
                    job.riding, job.ride, job.shared = donor, ride, ride
                self._start(job, None if donor is not None else match)
                for follower in job.followers:
                    follower.waiting_on, follower.shared = job, len(job.prompt)
                    self._start(follower, None)

    def _donor(self, rider: Job) -> tuple[Job | None, int]:
        """The running job of the same scope whose prompt shares the longest prefix with
        ``rider``'s, and its length (never the last prompt token: its logits must be
        the rider's own)."""
        prompt = rider.prompt
        best, length = None, 0
        for job in self._active:
            if job.waiting_on is not None or job.scope != rider.scope:
                continue  # a follower's cells are its leader's; another scope is private
            share = min(common_prefix(prompt, job.prompt), len(prompt) - 1)
            if share > length:
                best, length = job, share
        return (best, length) if length >= MIN_RIDE_TOKENS else (None, 0)

    def _board_riders(self) -> None:
        """Give each riding job its donor's prefix once the donor has prefilled it."""
        for job in self._active:
            donor = job.riding
            if donor is None:
                continue
            if donor not in self._active:  # the donor ended first: prefill alone
                job.riding, job.ride, job.shared = None, 0, 0
                self._looked_up("miss")
            elif donor.riding is None and donor.n_past >= job.ride:
                self._lib.llama_memory_seq_cp(
                    self._memory, donor.sequence, job.sequence, 0, job.ride
                )
                job.riding = None
                if self._window_kept(job.sequence, job.ride):
                    job.n_past = job.cached = job.ride
                    job.donor = donor
                    self.metrics.prompt_tokens_cached.inc(job.ride)
                    self._looked_up("hit")
                else:  # the donor's window moved past the prefix: prefill it all
                    self._lib.llama_memory_seq_rm(self._memory, job.sequence, -1, -1)
                    job.ride = job.shared = 0
                    self._looked_up("stale")

    def _start(self, job: Job, match: Match | None) -> None:
        reused = 0
        if match is not None and (match.whole or not self._ranges):
            # Wholly a prefix (the chat's previous turn): continue that sequence.
            sequence = match.sequence
            self._cache.take(sequence)
            self._forget_donor(sequence)
            cut = bool(self._lib.llama_memory_seq_rm(self._memory, sequence, match.length, -1))
            if cut and self._window_kept(sequence, match.length):
                reused = match.length
            else:  # cannot be cut there, or its window is gone: start it afresh
                self._lib.llama_memory_seq_rm(self._memory, sequence, -1, -1)
        else:
            sequence = self._new_sequence(sparing=match.sequence if match else -1)
            if match is not None:  # a shared start: copy it, the kept one stays
                self._lib.llama_memory_seq_cp(
                    self._memory, match.sequence, sequence, 0, match.length
                )
                self._cache.touch(match.sequence)
                if self._window_kept(sequence, match.length):
                    reused = job.shared = match.length
                    job.kept_donor = match.sequence
                else:
                    self._lib.llama_memory_seq_rm(self._memory, sequence, -1, -1)
        if match is not None:
            self._looked_up("hit" if reused else "stale")
        elif job.riding is None and job.waiting_on is None:
            self._looked_up("miss")  # a rider counts when it boards
        job.sequence, job.n_past, job.cached = sequence, reused, reused
        job.started_at = time.monotonic()
        grammar = Grammar(self.model, job.gbnf) if job.gbnf is not None else None
        job.chain = SamplerChain(job.sampling, self.model.n_vocab, grammar)
        job.text = TextStream(job.stops)
        self._active.append(job)
        if job.waiting_on is None:
            self.metrics.prompt_tokens.inc(len(job.prompt))
            self.metrics.prompt_tokens_cached.inc(reused)
        self._send(job, Event("started", index=job.index))

    def _looked_up(self, outcome: str) -> None:
        """A prompt's prefix lookup ended: ``hit``, ``miss`` or ``stale`` (a match
        whose memory could not be reused); the hit rate is hits over all three."""
        self.metrics.prefix_cache_lookups.labels(outcome).inc()

    def _window_kept(self, sequence: int, length: int) -> bool:
        """Whether ``sequence`` still holds what continuing it at ``length`` needs.

        Only a sliding-window cache can lose it: its window layers recycle the cells
        a sequence's window has passed, even with ``swa_full``, while cutting or
        copying by range still reports success. The window before ``length`` must
        still be there (llama-server's check); an empty window means it is gone.
        """
        if self.memory is not MemoryKind.SLIDING or length == 0:
            return True
        lowest = int(self._lib.llama_memory_seq_pos_min(self._memory, sequence))
        return 0 <= lowest <= max(0, length - self.model.n_swa)

    def _new_sequence(self, *, sparing: int = -1) -> int:
        if self._free_sequences:
            return self._free_sequences.pop()
        return self._evict(sparing=sparing)

    def _evict(self, *, sparing: int = -1) -> int:
        """Free the least recently used kept sequence (never ``sparing``); returns its id."""
        sequence = self._cache.pop_oldest(sparing=sparing)
        self._lib.llama_memory_seq_rm(self._memory, sequence, -1, -1)
        self._forget_donor(sequence)
        return sequence

    def _forget_donor(self, sequence: int) -> None:
        """Kept ``sequence`` leaves the cache: the cells others copied from it are theirs."""
        for job in self._active:
            if job.kept_donor == sequence:
                job.kept_donor, job.shared = -1, 0

    def _free_cells(self) -> int:
        """Cells not held; a follower's copied prompt shares its leader's cells."""
        held = sum(max(j.n_past - j.shared, 0) for j in self._active)
        return self.n_ctx - held - self._cache.cells

    def _make_room(self, generating: int, prefill_wanted: int) -> None:
        """Evict kept sequences, then end one request at a time (the longest), until
        the step can progress; while room is short, ended requests keep nothing."""
        needed = max(generating, 1)
        self._short = self._free_cells() < generating + prefill_wanted
        while self._free_cells() < generating + prefill_wanted and len(self._cache):
            self._free_sequences.append(self._evict())
        while self._active and self._free_cells() < needed:
            self._end_longest()
            needed = max(sum(1 for j in self._active if not j.prefilling), 1)

    def _end_longest(self) -> None:
        longest = max(self._active, key=lambda j: j.n_past - j.shared)
        log.info("KV cache full: ending the request holding %d cells", longest.n_past)
        self._short = True
        self._finish(longest, "length")

    def _live(self) -> tuple[list[Job], list[Job]]:
        """The generating and the prefilling jobs (followers not yet copied and riders
        not yet boarded are neither)."""
        live = [j for j in self._active if j.waiting_on is None and j.riding is None]
        return [j for j in live if not j.prefilling], [j for j in live if j.prefilling]

    def _step(self) -> None:
        self._short = False
        self._board_riders()
        generating, prefilling = self._live()
        room = self.n_batch - len(generating)
        wanted = min(room, sum(len(j.prompt) - j.n_past for j in prefilling))
        self._make_room(len(generating), wanted)
        generating, prefilling = self._live()
        budget = min(self.n_batch - len(generating), self._free_cells() - len(generating))
        batch = self._batch
        batch.clear()
        if generating:
            first = batch.add_next(
                np.fromiter((j.sequence for j in generating), np.int32, len(generating)),
                np.fromiter((j.generated[-1] for j in generating), np.int32, len(generating)),
                np.fromiter((j.n_past for j in generating), np.int32, len(generating)),
            )
            for offset, job in enumerate(generating):
                job.row, job.chunk = first + offset, 1
        in_batch = list(generating)
        for job in prefilling:
            job.row, job.chunk = -1, 0
            if budget <= 0:
                continue
            count = min(budget, len(job.prompt) - job.n_past)
            last = job.n_past + count == len(job.prompt)
            chunk = job.prompt[job.n_past : job.n_past + count]
            row = batch.add(job.sequence, chunk, job.n_past, output_last=last)
            job.row, job.chunk = (row if last else -1), count
            budget -= count
            in_batch.append(job)
        if not in_batch:
            return
        if not self._decode(in_batch):
            return
        now = time.monotonic()
        sampled: list[tuple[Job, int, int]] = []
        for job in in_batch:
            job.n_past += job.chunk
            if job.row >= 0:
                assert job.chain is not None
                sampled.append((job, job.chain.sample(self.ctx, job.row), job.row))
                for follower in job.followers:
                    if follower.waiting_on is job and follower in self._active:
                        sampled.append((follower, self._branch(job, follower), job.row))
        for job, token, row in sampled:
            if job in self._active:
                self._accept(job, token, row, now)
        self._observe_kv()

    def _branch(self, leader: Job, follower: Job) -> int:
        """Give ``follower`` the leader's prefilled prompt; its first token, from the same row.

        The copy is whole and at a token boundary (the leader has decoded exactly
        its prompt), which is right for every memory kind, a recurrent state too."""
        self._lib.llama_memory_seq_cp(self._memory, leader.sequence, follower.sequence, -1, -1)
        follower.waiting_on, follower.donor = None, leader
        follower.n_past, follower.cached = leader.n_past, leader.cached
        assert follower.chain is not None
        return follower.chain.sample(self.ctx, leader.row)

    def _decode(self, in_batch: list[Job]) -> bool:
        """One llama_decode; every return code leaves the books consistent with the cache."""
        for _ in range(MAX_RETRIES):
            code = int(self._lib.llama_decode(self.ctx, self._batch.struct()))
            if code == DECODE_OK:
                return True
            if code == DECODE_NO_KV_SLOT:  # the state is restored; make room and rebuild
                log.warning("llama_decode found no KV slot for %d tokens", self._batch.size)
                if len(self._cache):
                    while len(self._cache):
                        self._free_sequences.append(self._evict())
                else:
                    self._end_longest()
                return False
            # Aborted or failed: ubatches already processed stay in memory; cut them off
            # (a recurrent state cannot be cut back: those requests fail below).
            cut = all(
                [
                    self._lib.llama_memory_seq_rm(self._memory, job.sequence, job.n_past, -1)
                    for job in in_batch
                ]
            )
            if code == DECODE_ABORTED and cut:
                continue
            break
        log.error("llama_decode failed with %d for %d tokens", code, self._batch.size)
        for job in in_batch:
            self._fail(job, f"llama_decode failed with code {code}")
        return False

    def _accept(self, job: Job, token: int, row: int, now: float) -> None:
        """A sampled token: metrics, text, and whether the request ends here."""
        metrics = self.metrics
        metrics.generated_tokens.inc()
        if job.last_token_at is None:
            metrics.time_to_first_token.observe(now - job.arrived)
            job.first_token_at = now
        else:
            metrics.inter_token_latency.observe(now - job.last_token_at)
        job.last_token_at = now
        job.generated.append(token)
        assert job.text is not None
        if self.model.ends_generation(token):
            self._finish(job, "stop")
            return
        if job.logprobs is not None:
            logits = self._lib.llama_get_logits_ith(self.ctx, row)
            row_logits = np.ctypeslib.as_array(logits, shape=(self.model.n_vocab,))
            job.pending.append(from_logits(row_logits, token, job.logprobs))
        text = job.text.push(self.model.piece(token))
        if text:
            self._send_text(job, text)
        if job.text.stopped:
            self._finish(job, "stop")
        elif self._out_of_room(job):
            self._finish(job, "length")

    def _out_of_room(self, job: Job) -> bool:
        """``max_tokens`` reached, or no position left in the context for the next token."""
        if job.max_tokens is not None and len(job.generated) >= job.max_tokens:
            return True
        return job.n_past >= self.n_ctx

    def _finish(self, job: Job, reason: str | None) -> None:
        if job not in self._active:  # a follower already ended with its leader
            return
        assert job.text is not None
        tail = job.text.finish()
        if tail or job.pending:
            self._send_text(job, tail)
        ended_on_eog = bool(job.generated) and self.model.ends_generation(job.generated[-1])
        usage = Usage(
            prompt_tokens=len(job.prompt),
            completion_tokens=len(job.generated) - (1 if ended_on_eog else 0),
            cached_tokens=job.cached,
        )
        self._send(job, Event("end", finish_reason=reason, usage=usage, index=job.index))
        self._release(job)

    def _send_text(self, job: Job, text: str) -> None:
        pending, job.pending = tuple(job.pending), []
        self._send(job, Event("text", text=text, index=job.index, logprobs=pending))

    def _fail(self, job: Job, message: str) -> None:
        self._send(job, Event("error", error=message, index=job.index))
        self._release(job, keep=False)

    def _release(self, job: Job, *, keep: bool = True) -> None:
        """Give the slot back; keep the sequence for prefix reuse if there is room."""
        if job not in self._active:
            return
        self._active.remove(job)
        tokens = job.kv_tokens()
        kept = keep and not self._short and len(tokens) > 0 and self._cache.capacity > 0
        for other in self._active:  # cells copied from it: still shared if it is kept
            if other.donor is job:
                other.donor = None
                if kept:
                    other.kept_donor = job.sequence
                else:
                    other.shared = 0
        for follower in job.followers:  # never copied: nothing to continue from
            if follower.waiting_on is job and follower in self._active:
                self._finish(follower, None if job.cancelled else "length")
        if job.chain is not None:
            job.chain.close()
        if kept:
            share = (job.kept_donor, job.shared) if job.kept_donor >= 0 else None
            for sequence in self._cache.put(job.sequence, tokens, share, job.scope):
                self._lib.llama_memory_seq_rm(self._memory, sequence, -1, -1)
                self._free_sequences.append(sequence)
                self._forget_donor(sequence)
        else:
            self._lib.llama_memory_seq_rm(self._memory, job.sequence, -1, -1)
            self._free_sequences.append(job.sequence)
        head = job.head or job
        head.open_members -= 1
        if head.open_members <= 0:
            self.scheduler.finish(head)
        self._observe_kv()

    def _reset_cache(self) -> None:
        while len(self._cache):
            self._free_sequences.append(self._cache.pop_oldest())
        for job in self._active:
            job.kept_donor, job.shared = -1, 0

    def _observe_kv(self) -> None:
        self.metrics.kv_cells_used.set(self.n_ctx - self._free_cells())

    def _queue_changed(self, running: int, waiting: int) -> None:
        self.metrics.observe_queue(running, waiting)

    def _send(self, job: Job, event: Event) -> None:
        self._outbox.append((job, event))

    def _flush(self) -> None:
        """Deliver the step's events with one wake-up of each event loop."""
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Event]]] = {}
        for job, event in self._outbox:
            by_loop.setdefault(job.channel.loop, []).append((job, event))
        self._outbox = []
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening
                loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[tuple[Job, Event]]) -> None:
    for job, event in items:
        job.channel.queue.put_nowait(event)

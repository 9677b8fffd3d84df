"""The bounded event buffer and its background flusher (the core of ``BatchProcessor`` style).

The caller's side is two C-level calls: ``extend`` of a list with the event's :data:`WIDTH` items
(one atomic call under the GIL, so an event is never split), and ``tick``, the ``__next__`` of an
``itertools.count`` that numbers emitted events: no lock, no I/O. Every ``check_every``-th event
also runs :meth:`EventBuffer.check`, which wakes the flusher once a batch is waiting and keeps the
bound.

Why a flat list of items and not a deque of tuples: a tuple holding the caller's dicts is tracked
by Python's garbage collector for as long as it is buffered, and buffered events outlive young
collections, reach the oldest generation and make the collector run full collections over the
whole process (tens of milliseconds each, in the caller's thread). The items themselves (strings,
numbers, dicts of plain values) are not tracked, so a buffered event adds nothing to collect.

The bound: when the list holds ``spill_events`` or more, the list's content moves to a deque of
chunks (one tuple per chunk), so that dropping the oldest never shifts the whole buffer. Tuples,
not lists: the collector walks every item of a list in each collection of its generation, but
it stops tracking a tuple of untracked items the first time it meets one, so a chunk costs one
look, not one per young collection while it waits. Then the oldest events beyond
``buffer_events`` are dropped, whole events, oldest first. This runs in :meth:`check` (so memory
stays flat while the flusher is stuck on a frozen Redis), before every take and before
:meth:`stats`. Between two checks the list may hold up to ``check_every`` events beyond the
bound (more only while checks find the lock held, see :meth:`check`); nothing reads it
meanwhile.

Exact accounting without a lock on the hot path: only holders of ``_lock`` remove events (the
flusher's takes, counted in ``_taken``, and the bound's drops), so at any quiet moment::

    dropped = emitted - taken - queued

``stats()`` reads ``emitted`` first and the rest under the lock; events appended in between can
only make the figure smaller, so it is a lower bound while emitters run and exact when they
stop. Events appended after :meth:`close` go to a zero-length deque and show up as dropped.

The flusher thread: wait for the Event or ``flush_interval_ms``; take the oldest events, as many
as about ``QUANTUM_S`` of encoding covers (up to ``BATCHES_PER_SEND`` batches of
``batch_max_events`` while more than half the bound waits, see :meth:`EventBuffer._stage`);
encode one entry per shard per take; send them in one round trip; on failure keep the same
entries (same sequence numbers) and retry with exponential backoff and jitter, taking nothing new
meanwhile, so events wait in the bounded buffer and the oldest are dropped once it is full.
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from producers._encode import WIDTH, BatchEncoder
from producers._sender import StreamSender
from producers.config import ProducerConfig

logger = logging.getLogger(__name__)
_cpu = time.thread_time

BACKOFF_BASE_S: Final = 0.05
BACKOFF_MAX_S: Final = 5.0
DROP_LOG_INTERVAL_S: Final = 10.0
QUANTUM_S: Final = 0.0003     # the flusher's encoding between two sends while it keeps up
FIRST_COST_S: Final = 3e-6    # assumed until a take is measured: a new thread's first takes are slow
COST_WEIGHT: Final = 0.3      # weight of the latest take in the running cost estimate
MIN_TAKE_EVENTS: Final = 100
BATCHES_PER_SEND: Final = 4   # while catching up: full batches per send
MAX_TIMEOUT_S: Final = 1e6   # "wait forever" without overflowing lock timeouts
CHECK_EVERY: Final = 256     # callers run EventBuffer.check once per this many events
CHECK_LOCK_WAIT_S: Final = 0.001
SPILL_EVENTS: Final = 4_096  # the list moves to a chunk at this length (or at the bound, if smaller)


def seconds(timeout: object, default: float = 5.0) -> float:
    """A usable timeout from whatever the caller passed (None or garbage -> ``default``)."""
    try:
        value = float(timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    if value != value:  # NaN
        return default
    return min(max(value, 0.0), MAX_TIMEOUT_S)


def counter_value(counter: itertools.count[int]) -> int:
    """The next value ``counter`` would return, read without advancing it."""
    return int(repr(counter)[6:-1])


class EventBuffer:
    """One producer's buffer, counters, sender and flusher thread (replaced wholesale after fork)."""

    def __init__(self, config: ProducerConfig, client_factory: Callable[[], Any], *, producer_id: str,
                 owns_client: bool) -> None:
        self._buf: list[Any] = []
        self.append: Callable[[tuple[Any, ...]], None] = self._buf.extend
        self._chunks: collections.deque[tuple[Any, ...]] = collections.deque()
        self._chunk_items = 0    # items not yet cut from the chunks
        self._oldest_cut = 0     # items already cut from the front of the oldest chunk
        self._bound_items = config.buffer_events * WIDTH
        self._spill_items = max(1, min(SPILL_EVENTS, config.buffer_events)) * WIDTH
        self._wake_items = config.batch_max_events * WIDTH
        self._counter = itertools.count(0)
        self.tick: Callable[[], int] = self._counter.__next__
        self.check_every = CHECK_EVERY
        self._wake_event = threading.Event()
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._taken = 0
        self._errors = 0
        self._dropped_seen = 0
        self._dropped_logged = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL_S
        self._flushed_upto = 0
        self._batch_max = config.batch_max_events
        self._behind_events = max(1, config.buffer_events // 2)
        self._event_cost_s = FIRST_COST_S
        self._take_events = self._events_per_quantum()
        self._interval_s = config.flush_interval_ms / 1000.0
        self._encoder = BatchEncoder(config.shards, config.pseudonymizer())
        self._sender = StreamSender(client_factory, prefix=config.prefix, shards=config.shards,
                                    stream_maxlen=config.stream_maxlen, producer_id=producer_id,
                                    owns_client=owns_client)
        self._closing = False
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None

    @property
    def producer_id(self) -> str:
        return self._sender.producer_id

    def start(self) -> None:
        """Start the daemon flusher thread."""
        self._thread = threading.Thread(target=self._run, name="telemetry-flusher", daemon=True)
        self._thread.start()

    # -- accounting ---------------------------------------------------------------------------

    def emitted(self) -> int:
        return counter_value(self._counter)

    def queued(self) -> int:
        """Events waiting in the buffer (not yet taken by the flusher)."""
        return (len(self._buf) + self._chunk_items) // WIDTH

    def stats(self) -> dict[str, int]:
        """emitted, sent, dropped, buffered (queued + in flight), errors, send_failures."""
        emitted = self.emitted()
        with self._lock:
            doomed = self._keep_bound()
            queued = self.queued()
            self._dropped_seen = max(self._dropped_seen, emitted - self._taken - queued)
            dropped, errors = self._dropped_seen, self._errors
        del doomed   # freed outside the lock
        sender = self._sender
        return {"emitted": emitted, "sent": sender.sent_events, "dropped": dropped,
                "buffered": queued + sender.pending_events, "errors": errors,
                "send_failures": sender.failures}

    # -- caller-facing lifecycle ----------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Wait until every event emitted before the call has left the buffer.

        True when they reached Redis (or were counted as unencodable); False when ``timeout_s``
        passes first, or when the bound dropped events meanwhile (some may have been ours).
        """
        timeout_s = seconds(timeout_s)
        dropped_before = self.stats()["dropped"]
        target = self.emitted()
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self.queued() and not self._sender.pending
        self._wake_event.set()
        deadline = time.monotonic() + timeout_s
        with self._progress:
            while self._flushed_upto < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
        return self.stats()["dropped"] == dropped_before

    def close(self, timeout_s: float) -> bool:
        """Stop accepting events, drain within ``timeout_s``, stop the thread; True when all sent."""
        timeout_s = seconds(timeout_s)
        closed: collections.deque[Any] = collections.deque(maxlen=0)
        self.append = closed.extend   # later events vanish here and count as dropped
        self._deadline = time.monotonic() + timeout_s
        self._closing = True
        self._stop_event.set()
        self._wake_event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s + 0.5)
            if thread.is_alive():
                return False
        self._sender.close()
        return not self.queued() and not self._sender.pending

    # -- the bound (callers every check_every events; the flusher and stats under the lock) ------

    def check(self) -> None:
        """Wake the flusher when a batch is waiting, and keep the bound; run by callers.

        Waiting for the lock is short: a caller that blocks on it gives up the interpreter lock,
        so a flusher holding it finishes its few C-level list operations at once. The wait has a
        limit because the holder may be this very thread (an emit from a finalizer or a signal
        handler that ran inside a locked section): then this check is skipped, not deadlocked,
        and a later one keeps the bound.
        """
        size = len(self._buf)
        if size >= self._wake_items or self._chunks:
            self._wake_event.set()
        over = size >= self._spill_items or size + self._chunk_items > self._bound_items
        if over and self._lock.acquire(timeout=CHECK_LOCK_WAIT_S):
            try:
                doomed = self._keep_bound()
            finally:
                self._lock.release()
            del doomed   # freed outside the lock

    def _keep_bound(self) -> list[Sequence[Any]]:
        """Move a long list into a chunk, then drop the oldest events beyond the bound.

        The caller holds ``_lock``. Returns the dropped items: the caller releases them after
        the lock, as freeing thousands of events takes a while.
        """
        buf = self._buf
        if len(buf) >= self._spill_items:
            chunk = tuple(buf)   # one C call: whole events, as each extend is one call too
            del buf[:len(chunk)]   # callers only add at the end meanwhile: these are the items copied
            self._chunks.append(chunk)
            self._chunk_items += len(chunk)
        excess = self._chunk_items + len(buf) - self._bound_items
        doomed: list[Sequence[Any]] = []
        while excess > 0 and (oldest := self._cut_oldest(excess, doomed)):
            doomed.append(oldest)
            excess -= len(oldest)
        return doomed

    def _cut_oldest(self, limit_items: int, spent: list[Sequence[Any]]) -> Sequence[Any]:
        """Remove and return up to ``limit_items`` of the oldest items (whole events), from the
        oldest chunk, or from the list when there is none; the caller holds ``_lock``.

        A chunk keeps what was cut from it until the last of it is cut (at most one chunk
        beyond the bound); then it goes to ``spent``, for the caller to release after the lock.
        """
        chunks = self._chunks
        if not chunks:
            taken = self._buf[:limit_items]
            del self._buf[:len(taken)]   # callers only add at the end meanwhile
            return taken
        oldest, start = chunks[0], self._oldest_cut
        cut = oldest[start:start + limit_items]   # copies what is cut only, not what stays
        if start + len(cut) < len(oldest):
            self._oldest_cut = start + len(cut)
        else:
            spent.append(chunks.popleft())
            self._oldest_cut = 0
        self._chunk_items -= len(cut)
        return cut

    # -- flusher thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                if not self._closing:
                    self._wake_event.wait(self._interval_s)
                self._wake_event.clear()
                self._drain()
                if self._closing:
                    return
        except Exception:  # thread boundary: a bug here must be visible, the caller is unaffected
            logger.exception("telemetry flusher stopped by an unexpected error")

    def _take(self, events: int) -> Sequence[Any]:
        """The items of up to ``events`` of the oldest buffered events (after keeping the bound)."""
        with self._lock:
            doomed = self._keep_bound()
            items = self._cut_oldest(events * WIDTH, doomed)
            self._taken += len(items) // WIDTH
        del doomed
        return items

    def _drain(self) -> None:
        """Send until the buffer is empty; give up only when closing and past the deadline."""
        sender = self._sender
        attempt = 0
        while True:
            if not sender.pending and not self._stage():
                self._publish()
                return
            if sender.send():
                attempt = 0
                self._publish()
                continue
            attempt += 1
            self._publish()   # while Redis is away the buffer fills: report drops from here too
            if not self._backoff(attempt):
                return

    def _stage(self) -> bool:
        """Encode buffered events into pending entries (one per shard per take); False when none.

        While the flusher keeps up, one take holds what ``QUANTUM_S`` of encoding covers (learnt
        as it goes, at most ``batch_max_events``), and the send that follows gives up the
        interpreter lock while Redis answers: an ``emit`` waits at most about one quantum for the
        flusher. A thread that wants the lock otherwise gets it only when its holder blocks, or
        after the switch interval (5 ms), and a full batch of 2,000 events takes longer than a
        millisecond to encode. Giving the lock up between slices of a batch instead costs more:
        a sleep is the only sure way (a bare release is taken back before the waiting thread
        wakes), and a sleep lasts at least 50 µs of timer slack.

        Once half the bound is waiting, catching up comes first: up to ``BATCHES_PER_SEND`` full
        batches per send, as each round trip gives up the lock and a busy caller may keep it for
        a whole switch interval before the flusher gets it back.
        """
        behind = self.queued() >= self._behind_events
        for taken in range(BATCHES_PER_SEND if behind else 1):
            items = self._take(self._batch_max if behind else self._take_events)
            if not items:
                return taken > 0
            started = _cpu()
            entries, errors = self._encoder.encode_items(items)
            self._learn_cost(_cpu() - started, len(items) // WIDTH)
            if errors:
                with self._lock:
                    self._errors += errors
            for shard, payload, count in entries:
                self._sender.add(shard, payload, count)
        return True

    def _learn_cost(self, elapsed_s: float, events: int) -> None:
        """Fold one take's encoding cost per event into the estimate that sizes the next takes.

        Thread CPU time, not the clock: a caller that takes the interpreter lock meanwhile (after
        the switch interval) must not make the flusher's takes smaller. A take of fewer than
        ``MIN_TAKE_EVENTS`` says little: its cost is mostly what every take costs, whatever its size.
        """
        if events < MIN_TAKE_EVENTS:
            return
        self._event_cost_s += (elapsed_s / events - self._event_cost_s) * COST_WEIGHT
        self._take_events = self._events_per_quantum()

    def _events_per_quantum(self) -> int:
        """Events that ``QUANTUM_S`` of encoding covers, within [MIN_TAKE_EVENTS, batch_max_events]."""
        fit = round(QUANTUM_S / max(self._event_cost_s, 1e-9))
        return max(min(MIN_TAKE_EVENTS, self._batch_max), min(fit, self._batch_max))

    def _backoff(self, attempt: int) -> bool:
        """Sleep before the next attempt (exponential, jittered); False when time is up."""
        ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2 ** min(attempt, 16)))
        delay = random.uniform(ceiling / 2, ceiling)
        if self._closing:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            return True
        self._stop_event.wait(delay)
        return True

    def _publish(self) -> None:
        """Tell waiting flush() calls how far delivery got; log drops at most once per interval."""
        emitted = self.emitted()
        with self._progress:
            queued = self.queued()
            if not self._sender.pending:
                self._flushed_upto = max(self._flushed_upto, emitted - queued)
            self._dropped_seen = max(self._dropped_seen, emitted - self._taken - queued)
            dropped = self._dropped_seen
            self._progress.notify_all()
        now = time.monotonic()
        if dropped > self._dropped_logged and now - self._drop_logged_at >= DROP_LOG_INTERVAL_S:
            logger.warning("telemetry buffer full: %d events dropped (oldest first) since start",
                           dropped)
            self._dropped_logged, self._drop_logged_at = dropped, now

"""The bounded event buffer and its background flusher (the core of ``BatchProcessor`` style).

The caller's side is two C-level calls: ``append`` of a tuple to a ``collections.deque`` with
``maxlen`` (atomic under the GIL; when full the deque itself discards the OLDEST event) and
``tick``, the ``__next__`` of an ``itertools.count`` that numbers emitted events. No lock, no
check, no I/O. Every ``wake_every``-th event also sets the flusher's Event.

Exact accounting without a lock on the hot path: only the flusher removes events (``popleft``
under ``_lock``, counting them in ``_taken``), so at any quiet moment::

    dropped = emitted - taken - len(buffer)

``stats()`` reads ``emitted`` first and the rest under the lock; events appended in between can
only make the figure smaller, so it is a lower bound while emitters run and exact when they
stop. Events appended after :meth:`close` go to a zero-length deque and show up as dropped.

The flusher thread: wait for the Event or ``flush_interval_ms``; take up to ``batch_max_events``
(up to ``BATCHES_PER_SEND`` such batches when a backlog has built up); encode one entry per shard
per batch; send them in one pipeline; on failure keep the same entries (same sequence numbers)
and retry with exponential backoff and jitter, taking nothing new meanwhile, so events wait in
the bounded deque and the oldest are dropped once it is full.
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from producers._encode import BatchEncoder
from producers._sender import StreamSender
from producers.config import ProducerConfig

logger = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 0.05
BACKOFF_MAX_S: Final = 5.0
DROP_LOG_INTERVAL_S: Final = 10.0
BATCHES_PER_SEND: Final = 4
MAX_TIMEOUT_S: Final = 1e6   # "wait forever" without overflowing lock timeouts


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
        self._buf: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=config.buffer_events)
        self.append: Callable[[tuple[Any, ...]], None] = self._buf.append
        self._counter = itertools.count(0)
        self.tick: Callable[[], int] = self._counter.__next__
        self.wake_every = config.batch_max_events
        self._wake_event = threading.Event()
        self.wake: Callable[[], None] = self._wake_event.set
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
        self._interval_s = config.flush_interval_ms / 1000.0
        self._encoder = BatchEncoder(config.shards)
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

    def stats(self) -> dict[str, int]:
        """emitted, sent, dropped, buffered (queued + in flight), errors, send_failures."""
        emitted = self.emitted()
        with self._lock:
            queued = len(self._buf)
            self._dropped_seen = max(self._dropped_seen, emitted - self._taken - queued)
            dropped, errors = self._dropped_seen, self._errors
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
            return not self._buf and not self._sender.pending
        self.wake()
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
        closed: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=0)
        self.append = closed.append   # later events vanish here and count as dropped
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
        return not self._buf and not self._sender.pending

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

    def _take(self) -> list[tuple[Any, ...]]:
        with self._lock:
            count = min(self._batch_max, len(self._buf))
            pop = self._buf.popleft
            events = [pop() for _ in range(count)]
            self._taken += count
        return events

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
        """Encode up to ``BATCHES_PER_SEND`` batches into pending entries; False when none was taken.

        Several batches share one pipelined round trip when a backlog has built up: each round
        trip gives up the interpreter lock twice, and a busy caller may hold it for a whole
        switch interval (5 ms) each time, so sending per batch would cap throughput. Entries
        stay at most ``batch_max_events`` events each.
        """
        staged = False
        for _ in range(BATCHES_PER_SEND):
            events = self._take()
            if not events:
                break
            staged = True
            entries, errors = self._encoder.encode(events)
            if errors:
                with self._lock:
                    self._errors += errors
            for shard, payload, count in entries:
                self._sender.add(shard, payload, count)
            if len(self._buf) < self._batch_max:
                break
        return staged

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
            queued = len(self._buf)
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

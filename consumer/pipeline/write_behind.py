"""Writes made on a thread while the loop goes on reading and recording.

Why: at tens of thousands of series per window a worker spent a third of its time waiting for
influxd's answer to its own writes (docs/scaling.md). Here a write is handed to a writer
thread; while it waits on the socket (the GIL released), the loop decodes and records the
next entries, checkpoints, and hands over the next shard's points.

What stays as it was:

* **Order.** A shard's writes always go to the same thread, first in first out, and at most
  one flush per shard is out (the loop does not collect a shard whose flush is still out): a
  series' points reach InfluxDB in the order they were collected, so a newer value is never
  overwritten by an older one.
* **Commit.** Only the loop changes window state: it commits a finished flush in
  :meth:`WriteBehind.finished`, so a failed or abandoned write leaves exactly its points dirty,
  and the checkpoints taken meanwhile hold them as dirty (a restart writes them again).
* **Leases.** The thread only reads them (``may_write``); the loop keeps renewing them, also
  while it waits for the thread (:meth:`WriteBehind.wait`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from consumer.core.model import Point
from consumer.sinks import WriteResult

State = TypeVar("State")
Writer = Callable[["PendingWrite[State]"], WriteResult | None]


@dataclass(eq=False)
class WriteTally:
    """What a write cost, counted by the thread and added to the statistics by the loop."""

    errors: int = 0
    errors_counted: int = 0
    """Of ``errors``, those the loop has added to the statistics (it counts them while retrying)."""
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(eq=False)
class PendingWrite(Generic[State]):
    """A flush handed to the thread: ``state`` is the shard's (``None``: best-effort self-telemetry)."""

    state: State | None
    flush: object
    points: Sequence[Point]
    tally: WriteTally = field(default_factory=WriteTally)
    result: WriteResult | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class WriteBehind(Generic[State]):
    """One writer thread and its FIFO of :class:`PendingWrite`.

    One thread: a second (two requests in flight) measured no gain on a two-core machine (bench
    cardinality, 40,000 series: 7,055 and 7,245 points/s), and one keeps a single order for all
    of a worker's writes.
    """

    def __init__(self, write: Writer[State], *, key: Callable[[State], int]) -> None:
        self._write = write
        self._key = key
        self._queue: queue.SimpleQueue[PendingWrite[State] | None] = queue.SimpleQueue()
        self._pending: list[PendingWrite[State]] = []
        self._thread: threading.Thread | None = None

    def submit(self, state: State | None, flush: object, points: Sequence[Point]) -> PendingWrite[State]:
        """Queue ``points`` for writing; the thread starts with the first write."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
            self._thread.start()
        job: PendingWrite[State] = PendingWrite(state, flush, points)
        self._pending.append(job)
        self._queue.put(job)
        return job

    def busy(self, state: State) -> bool:
        """Whether a flush of ``state``'s shard is out or not yet committed (collecting again would
        repeat its points)."""
        return bool(self._of(state, done_too=True))

    def outstanding(self, state: State | None = None) -> bool:
        """Whether a write (of ``state``'s shard, if given) is still with the thread."""
        return bool(self._of(state, done_too=False))

    @property
    def pending(self) -> int:
        """Writes handed over and not yet returned by :meth:`finished`."""
        return len(self._pending)

    def jobs(self) -> list[PendingWrite[State]]:
        """The writes not yet returned by :meth:`finished`, oldest first."""
        return list(self._pending)

    def finished(self) -> list[PendingWrite[State]]:
        """The writes done since the last call, in submission order; a thread's error is raised here."""
        done = [job for job in self._pending if job.done.is_set()]
        if done:
            self._pending = [job for job in self._pending if job not in done]  # identity: eq=False
        for job in done:
            if job.error is not None:
                raise job.error
        return done

    def wait(self, timeout_s: float, *, state: State | None = None) -> bool:
        """Wait up to ``timeout_s`` for the oldest write still out (of ``state``'s shard, if given)."""
        jobs = self._of(state, done_too=False)
        return not jobs or jobs[0].done.wait(timeout_s)

    def _of(self, state: State | None, *, done_too: bool) -> list[PendingWrite[State]]:
        key = None if state is None else self._key(state)
        return [job for job in self._pending
                if (done_too or not job.done.is_set())
                and (key is None or (job.state is not None and self._key(job.state) == key))]

    def close(self) -> None:
        """Stop the thread once its queue is empty (the loop has waited for what it needs)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job.result = self._write(job)
            except BaseException as exc:  # handed to the loop, which raises it
                job.error = exc
            finally:
                job.done.set()

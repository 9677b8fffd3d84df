"""The worker: the loop and its lifecycle (source -> decode -> dedupe -> validate -> windows -> sink).

Per owned shard, strictly in stream-id order::

    read (XRANGE after the checkpoint while catching up, then XREADGROUP >)
      -> decode (WireError: dead letter with the raw entry)
      -> dedupe (producer id, batch sequence)
      -> ShardWindows.record_batch: pseudonymise, validate, record (rejection: dead letter, as
         pseudonymised)
         (a raw-mode measurement's points are held there as they are, to be written one-for-one)
      -> collect_due (by the watermark; by the clock too once a read found the stream's end, so a
         caught-up shard is written while the next one is recorded)
      -> handed to the writer thread (:mod:`consumer.pipeline.write_behind`: sink.write with retry
         and backoff, in order, while the loop reads and records the next entries)
      -> once written, ShardWindows.commit -> dead letters appended (idempotent)
      -> checkpoint (fenced Lua: state + XACK) -> XTRIM MINID below what the group still needs

What is acknowledged when: an entry is acknowledged only by the checkpoint that stores the
window state containing its events; points already written are marked clean in that state,
dirty ones are in it too (a write still in flight leaves its points dirty until the loop
commits it). So a crash at any moment loses nothing and a restart re-derives exactly the state
the dead worker had (see :mod:`consumer.core.checkpoint`).

Ownership (:mod:`consumer.pipeline.ownership`): shards are spread over live workers by rendezvous hashing
and held with fenced leases (:mod:`consumer.pipeline.lease`); maintenance every third of a lease renews
them, gives up shards that moved to a new worker, and takes those that are free; a long read
renews them between stream entries when due. Checkpoints and the stream upkeep after them are in
:mod:`consumer.pipeline.upkeep`. Back-pressure: while InfluxDB is down
the windows stay in memory (and in checkpoints); a shard whose open series-windows reach the
memory budget is not read until the sink catches up. ``drain`` mode processes everything in the
streams, flushes every window and returns; a stop request (SIGTERM/SIGINT) stops reading,
flushes due windows once, checkpoints and returns within a few seconds.

Usage::

    worker = Worker(WorkerConfig.from_env())
    exit_code = worker.run()          # until SIGTERM, or until drained with drain=True
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis

from consumer.aggregation.catalogue import mode_of
from consumer.aggregation.privacy import Pseudonymizer
from consumer.aggregation.raw_points import catalogued_names
from consumer.aggregation.window import Flush
from consumer.core.checkpoint import CheckpointStore
from consumer.core.config import WorkerConfig, redact_url
from consumer.core.errors import GroupMissing
from consumer.core.log_once import LogOnce
from consumer.core.metrics import Metrics
from consumer.core.model import REASON_REJECTED, DeadLetter, Point
from consumer.core.selftelemetry import SelfTelemetry
from consumer.dlq.deadletter import DeadLetterWriter, packed_payload, point_payload, withheld_entry
from consumer.pipeline.lease import LeaseManager
from consumer.pipeline.ownership import REDIS_ERRORS, Ownership, ShardState
from consumer.pipeline.source import StreamEntry, StreamSource, is_transient, make_client, parse_id
from consumer.pipeline.upkeep import Checkpoints
from consumer.pipeline.write_behind import PendingWrite, WriteBehind, WriteTally
from consumer.sinks import Backoff, Sink, SinkError, SinkUnavailable, WriteResult, make_sink
from producers.wire import WireError, decode_entry

logger = logging.getLogger(__name__)

WAIT_STEP_S: Final = 0.25
RENEW_EVERY_EVENTS: Final = 64
"""Events recorded between two checks of the leases' renewal time (an entry holds up to 2,000)."""


class Worker:
    """One worker process: owns some shards, aggregates them, writes points, checkpoints."""

    def __init__(self, config: WorkerConfig, *, client: redis.Redis[bytes] | None = None,
                 sink: Sink | None = None, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self.client = client if client is not None else make_client(
            config.redis_url, socket_connect_timeout=2.0, socket_timeout=config.block_ms / 1000 + 5.0)
        self.sink = sink if sink is not None else make_sink(config)  # type: ignore[arg-type]
        self.clock = clock
        self.worker_id = config.consumer
        self.source = StreamSource(self.client, prefix=config.stream_prefix, group=config.group,
                                   consumer=self.worker_id)
        self.store = CheckpointStore(self.client, prefix=config.stream_prefix, group=config.group)
        self.letters = DeadLetterWriter(self.client, prefix=config.stream_prefix)
        self.leases = LeaseManager(self.client, prefix=config.stream_prefix, worker_id=self.worker_id,
                                   lease_s=config.lease_s)
        key = (config.pseudonym_key or "").encode()
        self.privacy = Pseudonymizer(config.pseudonymize, key) if config.pseudonymize else None
        self.metrics = Metrics(stale_after_s=max(60.0, 6 * config.lease_s))
        self.stats = SelfTelemetry(worker=self.worker_id, window_s=config.window_s,
                                   listener=self.metrics.listen)
        self.ownership = Ownership(config, self.leases, self.source, self.store, self.stats,
                                   checkpoint=self._hand_over)
        self.checkpoints = Checkpoints(config, self.source, self.store, self.letters, self.stats,
                                       lose=self.ownership.lose)
        self.shards: dict[int, ShardState] = self.ownership.shards   # the same dict, read by tests and tools
        self._stop = threading.Event()
        self._outages = LogOnce(logger)
        self._started = time.monotonic()
        self._sink_down_at_stop = False
        self._writes: WriteBehind[ShardState] = WriteBehind(self._write_job, key=lambda state: state.shard)

    @property
    def config(self) -> WorkerConfig:
        return self._config

    @config.setter
    def config(self, config: WorkerConfig) -> None:
        """Replace the configuration everywhere it is read (ownership and checkpoints too)."""
        self._config = self.ownership.config = self.checkpoints.config = config

    # -- lifecycle --------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """Run until stopped (or drained); returns the exit code (0)."""
        self._install_signals()
        server = (self.metrics.serve(self.config.metrics_port, self.config.metrics_host)
                  if self.config.metrics_port else None)
        config = self.config
        logger.info("worker %s starting: redis %s, streams %s:{0..%d}, group %s, sink %s%s", self.worker_id,
                    redact_url(config.redis_url), config.stream_prefix, config.shards - 1, config.group,
                    redact_url(config.influx_url), " (drain)" if config.drain else "")
        for name in catalogued_names(config.raw_measurements):
            logger.warning("TELEMETRY_RAW_MEASUREMENTS names %r, which is in the catalogue: its entry "
                           "decides its mode (%s); change the entry's mode instead", name, mode_of(name))
        redis_backoff = Backoff(base_s=0.2, cap_s=5.0)
        try:
            while not self.stopping:
                try:
                    if self.poll_once():
                        break
                    redis_backoff.reset()
                except (*REDIS_ERRORS, redis.ResponseError) as exc:
                    if isinstance(exc, redis.ResponseError) and not is_transient(exc):
                        raise
                    delay = redis_backoff.next_delay()
                    self._outages.once("redis-down", logging.WARNING,
                                   "Redis unreachable at %s: %s; retrying in %.1fs; check `telemetry doctor`",
                                   redact_url(self.config.redis_url), exc, delay)
                    self._stop.wait(delay)
                    continue
                self._outages.over("redis-down")
                self.metrics.beat()
        finally:
            self._shutdown()
            if server is not None:
                server.shutdown()
        return 0

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: self.stop())

    def _shutdown(self) -> None:
        """Stop reading; flush due windows once; checkpoint; release leases; one summary line."""
        self.wait_for_writes()
        for state in list(self.shards.values()):
            try:
                self._flush_now(state, state.windows.collect_due(self.clock(), idle=True))
                self.checkpoints.save(state, trim=False)
                if state.shard in self.shards:
                    self.leases.release(state.shard)
            except REDIS_ERRORS as exc:
                logger.warning("shard %d: could not checkpoint at exit (%s); the next owner re-reads "
                               "its entries from the last checkpoint", state.shard, exc)
        with contextlib.suppress(*REDIS_ERRORS):
            self.leases.leave()
        self.wait_for_writes()  # the last self-telemetry report
        self._writes.close()
        self.sink.close()
        logger.info("worker %s stopped after %.1fs: %s", self.worker_id, time.monotonic() - self._started,
                    self.stats.summary())

    # -- one iteration ----------------------------------------------------------------------
    def poll_once(self) -> bool:
        """One read-process-flush-checkpoint cycle; True when a drain has finished."""
        if self.ownership.due():
            self.ownership.maintain()
        self._settle()
        got, read_any = self._read()
        now = self.clock()
        for state in list(self.shards.values()):
            entries = got.get(state.shard, [])
            if entries:
                self._process(state, entries, now)
            if self._writes.busy(state):
                continue  # its flush is still out: collecting would repeat it, acking would run ahead
            if self._checkpoint_due(state):
                self.checkpoints.save(state)
            if state.shard not in self.shards:
                continue
            if state.paused:    # over the budget: write everything pending now, even if not due
                self._flush(state, state.windows.collect_all())
            else:
                self._flush(state, state.windows.collect_due(now, idle=self._input_idle(state, entries, now)))
        self._settle()
        self._report(now)
        if self.config.drain and not read_any and not self._writes.pending and self._all_caught_up():
            self._finish_drain()
            return True
        return False

    def _read(self) -> tuple[dict[int, list[StreamEntry]], bool]:
        got: dict[int, list[StreamEntry]] = {}
        catching_up = [s for s in self.shards.values() if s.backlog_until]
        for state in catching_up:
            until = state.backlog_until or "+"
            entries = self.source.read_range(state.shard, after_id=state.last_id, until_id=until,
                                             count=self.config.read_count)
            if entries:
                got[state.shard] = entries
            else:
                state.backlog_until = None
        for state in self.shards.values():
            if state.read_ahead:
                got[state.shard], state.read_ahead = state.read_ahead, []
        readable = [s.shard for s in self.shards.values() if not s.backlog_until and not self._over_budget(s)]
        writing = self._writes.pending
        if readable:
            block = None if (got or self.config.drain or writing) else self.config.block_ms
            try:
                fresh = self.source.read_new(readable, count=self.config.read_count, block_ms=block)
            except GroupMissing:
                self.ownership.recreate_groups(readable)
            else:
                for shard, entries in fresh.items():
                    got[shard] = got.get(shard, []) + entries
        if not got and writing:  # nothing to read: wait for the write (its commit is the next work)
            self._writes.wait(self.config.block_ms / 1000)
        elif not got and not readable:
            self._stop.wait(self.config.block_ms / 1000)
        if self.config.drain and not got:
            self._stop.wait(0.05)  # waiting for a shard's lease: do not spin
        return got, bool(got)

    def _input_idle(self, state: ShardState, entries: Sequence[StreamEntry], now: float) -> bool:
        """Whether the shard's stream has nothing more for now: its windows due by the clock are written.

        An empty read says so. A read that returned fewer entries than asked reached the stream's
        end too, but a producer may still be appending (a backlog replayed while it is read): one
        more read tells, and is asked only when a window waits on the answer. What it returns is
        processed first in the next poll. This way a shard that is caught up is written while the
        loop records the next shard's entries: a backlog of one window at 100,000 series is
        otherwise recorded in full, influxd idle, then written in full.
        """
        if not entries:
            return True
        if (len(entries) >= self.config.read_count or state.backlog_until
                or not state.windows.due_only_if_idle(now)):
            return False
        try:
            more = self.source.read_new([state.shard], count=self.config.read_count, block_ms=None)
        except GroupMissing:
            return False  # the next poll's read recreates the group
        state.read_ahead = more.get(state.shard, [])
        return not state.read_ahead

    def _over_budget(self, state: ShardState) -> bool:
        """Pause reading while the series-windows not yet written reach the budget.

        Only pending (dirty) series-windows count: they can always be written, early if need be,
        so a pause always ends once the sink takes them. Written windows retained for late events
        are shed when they alone fill the budget (``ShardWindows.shed``).
        """
        if state.windows.series_count >= self.config.max_open_series:
            state.windows.shed(self.config.max_open_series // 2)  # written windows kept for late events
        over = state.windows.dirty_count >= self.config.max_open_series
        if over and not state.paused:
            logger.warning("shard %d: memory budget reached (%d series-windows not yet written): reading "
                           "paused, writing them now; raise TELEMETRY_MAX_OPEN_SERIES if memory allows",
                           state.shard, self.config.max_open_series)
        elif state.paused and not over:
            logger.info("shard %d: below the memory budget again, reading resumed", state.shard)
        state.paused = over
        return over

    def _checkpoint_due(self, state: ShardState) -> bool:
        due = time.monotonic() - state.checkpointed_at >= self.config.checkpoint_interval_s
        return state.dirty and due

    def _all_caught_up(self) -> bool:
        wanted = self.ownership.wanted()
        busy = any(s.backlog_until or s.paused for s in self.shards.values())
        return set(wanted) <= set(self.shards) and not busy

    def _finish_drain(self) -> None:
        for state in list(self.shards.values()):
            self._flush_now(state, state.windows.collect_all())
            if state.shard in self.shards:
                self.checkpoints.save(state)
        self._report(self.clock(), force=True)

    # -- processing -------------------------------------------------------------------------
    def _process(self, state: ShardState, entries: Sequence[StreamEntry], now: float) -> None:
        """Apply entries in id order; counters are added once per entry (same totals, less work)."""
        last = parse_id(state.last_id)
        source = self.source.stream(state.shard)
        for entry in entries:
            state.to_ack.append(entry.entry_id)
            key = entry.key
            if key <= last:
                continue  # already applied (re-delivered after a takeover)
            last = key
            state.last_id = entry.entry_id
            try:
                batch = decode_entry(entry.fields)
            except WireError as exc:
                raw = packed_payload(withheld_entry(entry.fields) if self.privacy else dict(entry.fields))
                self._dead(state, DeadLetter(exc.reason, exc.detail, source, entry.entry_id, None, raw))
                continue
            if not state.dedupe.admit(batch.producer_id, batch.sequence, key[0]):
                self.stats.count(state.shard, "duplicates")
                continue
            accepted = self._apply(state, entry, key, batch.events, now, source)
            self.stats.count(state.shard, "events_in", accepted)
        state.dirty = True
        self._count_window_changes(state)

    def _apply(self, state: ShardState, entry: StreamEntry, key: tuple[int, int], events: Sequence[Any],
               now: float, source: str) -> int:
        """Validate and record one batch's events; the number accepted (rejections: dead letters).

        One read may carry a million events: leases and the heartbeat are renewed when due
        every :data:`RENEW_EVERY_EVENTS` events, so a long read never lets them lapse.
        """
        privacy = self.privacy.wire_event if self.privacy else None
        record_batch, keep_if_due = state.windows.record_batch, self.ownership.keep_if_due
        rejected: list[tuple[int, str, str]] = []
        for start in range(0, len(events), RENEW_EVERY_EVENTS):
            keep_if_due()
            chunk = events[start:start + RENEW_EVERY_EVENTS]
            rejected += record_batch(chunk, key[0], key[1], now, privacy, start)
        for index, reason, detail in rejected:  # the letter keeps the event as pseudonymised
            payload = packed_payload(privacy(events[index]) if privacy else events[index])
            self._dead(state, DeadLetter(reason, detail, source, entry.entry_id, index, payload))
        return len(events) - len(rejected)

    def _dead(self, state: ShardState, letter: DeadLetter) -> None:
        state.letters.append(letter)
        self.stats.dead_letter(state.shard, letter.reason)

    def _count_window_changes(self, state: ShardState) -> None:
        windows = state.windows
        self.stats.count(state.shard, "late_rewrites", windows.late_events - state.late_seen)
        self.stats.count(state.shard, "overflow", windows.overflowed - state.overflow_seen)
        state.late_seen, state.overflow_seen = windows.late_events, windows.overflowed

    # -- writing ----------------------------------------------------------------------------
    def _flush(self, state: ShardState, flush: Flush) -> None:
        """Hand a flush's points to the writer thread; :meth:`_settle` commits them once written."""
        if flush.points:
            self._writes.submit(state, flush, flush.points)

    def _flush_now(self, state: ShardState, flush: Flush) -> None:
        """Write a flush and commit it before returning (drain, shutdown)."""
        self._flush(state, flush)
        self.wait_for_writes(state)

    def wait_for_writes(self, state: ShardState | None = None) -> None:
        """Wait for the writes out (of ``state``'s shard, or all), keeping leases; then commit them."""
        while self._writes.outstanding(state):
            if not self._writes.wait(WAIT_STEP_S, state=state):
                self.ownership.keep_if_due()
                self.metrics.beat()
        self._settle()

    def _hand_over(self, state: ShardState) -> None:
        """Before a shard moves to another worker: its write is in and committed, then checkpointed.

        Else our write could land after the new owner's newer one and leave the older value.
        """
        self.wait_for_writes(state)
        self.checkpoints.save(state, trim=False)

    def _settle(self) -> None:
        """Commit the writes the thread finished; count the errors of those still retrying."""
        for job in self._writes.jobs():
            if job.state is not None:
                self._count_errors(job.state, job.tally)
        for job in self._writes.finished():
            if job.state is None or job.result is None:
                continue  # self-telemetry, or stopped / lost the shard: the windows stay dirty
            for latency_ms in job.tally.latencies_ms:
                self.stats.latency(job.state.shard, latency_ms)
            self._committed(job.state, job.flush, job.result)  # type: ignore[arg-type]

    def _count_errors(self, state: ShardState, tally: WriteTally) -> None:
        errors = tally.errors
        if errors > tally.errors_counted:
            self.stats.count(state.shard, "write_errors", errors - tally.errors_counted)
            tally.errors_counted = errors

    def _committed(self, state: ShardState, flush: Flush, result: WriteResult) -> None:
        """The sink has the flush: mark it clean, count it, dead-letter what InfluxDB refused."""
        state.windows.commit(flush)
        state.dirty = True
        self.stats.count(state.shard, "points_out", result.written)
        source = self.source.stream(state.shard)
        for point, message in result.rejected:
            line = point_payload(point)
            letter = DeadLetter(REASON_REJECTED, message, source, "", None, line,
                                {"measurement": point.measurement, "time_ns": str(point.time_ns)})
            self._dead(state, letter)

    def _write_job(self, job: PendingWrite[ShardState]) -> WriteResult | None:
        """On the writer thread: a shard's flush with retries; self-telemetry once, best effort."""
        if job.state is None:
            with contextlib.suppress(SinkError):
                return self.sink.write(job.points)
            return None
        return self._write(job.state, job.points, job.tally)

    def _write(self, state: ShardState, points: Sequence[Point], tally: WriteTally) -> WriteResult | None:
        """Write with retries until it succeeds; None when the shard was lost or the worker stops."""
        backoff = Backoff()
        while True:
            if self.stopping and self._sink_down_at_stop:
                return None  # one failed write at shutdown is enough: exit within seconds
            lease = self.ownership.may_write(state)
            if lease == "lost":
                return None
            if lease == "ok":
                started = time.monotonic()
                try:
                    result = self.sink.write(points)
                except SinkError as exc:
                    tally.errors += 1
                    delay = self._sink_failed(exc, backoff)
                else:
                    tally.latencies_ms.append((time.monotonic() - started) * 1000)
                    if self._outages.over("sink-down"):
                        logger.info("sink at %s is writable again", redact_url(self.config.influx_url))
                    return result
            else:
                delay = WAIT_STEP_S  # the loop renews the lease; do not risk a stale write meanwhile
            if self.stopping:
                self._sink_down_at_stop = True
                return None
            self._stop.wait(delay)

    def _sink_failed(self, exc: SinkError, backoff: Backoff) -> float:
        delay = backoff.delay_for(exc)
        url = redact_url(self.config.influx_url)
        if isinstance(exc, SinkUnavailable):
            self._outages.once("sink-down", logging.WARNING,
                           "InfluxDB unreachable at %s: %s; retrying in %.1fs (windows kept, entries "
                           "unacknowledged); check `telemetry doctor`", url, exc, delay)
        else:
            self._outages.once("sink-down", logging.ERROR,
                           "InfluxDB at %s refused the write: %s; retrying in %.1fs; fix the "
                           "token/database settings, see `telemetry doctor`", url, exc, delay)
        return delay

    # -- reporting --------------------------------------------------------------------------
    def _report(self, now: float, *, force: bool = False) -> None:
        for state in self.shards.values():
            self.stats.gauge(state.shard, "open_windows", state.windows.open_windows)
        if not (force or self.stats.due(now)):
            return
        points = self.stats.collect(now, sorted(self.shards))
        self._writes.submit(None, None, points)  # best effort: the data's own writes report an outage


COLLECTOR_THRESHOLDS: Final = (50_000, 20, 100)
"""The worker process's garbage-collector thresholds (:func:`tune_collector`); Python's are 700, 10, 10."""


def tune_collector() -> None:
    """Keep Python's cyclic collector from re-walking the windows' state again and again.

    Why: a worker holds tens of thousands of long-lived series-windows, several containers
    each, and creates a few for every new one. With the default thresholds the collector kept
    re-walking them: about two thirds of the cost of opening a series at 40,000 series per window
    (docs/scaling.md). The start-up heap is frozen (never collected) and the youngest generation
    is collected every 50,000 allocations instead of 700: cycles are still freed, a little later.
    Only for the worker's own process (:func:`run_worker`); an embedding program keeps its settings.
    """
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def run_worker(config: WorkerConfig) -> int:
    """Build a worker from ``config`` and run it (in a process of its own); the exit code."""
    worker = Worker(config)
    tune_collector()
    return worker.run()

"""``Telemetry``: record events from bot code without ever blocking or raising.

Usage::

    from producers import Telemetry

    tel = Telemetry.from_env()                  # or Telemetry(redis_url="redis://cache:6379/0")
    tel.emit("attachment_monitoring", {"emotional_intensity": 0.82, "intervention_provided": True},
             tags={"user_id": "u42", "bot_name": "elena", "risk_level": "HIGH"})
    tel.count("engagement_engine_telemetry", "interventions_generated", tags={"bot_name": "elena"})
    with tel.timer("vector_classification", "latency_ms", tags={"bot_name": "elena"}):
        classify()
    att = tel.bind("attachment_monitoring", bot_name="elena")   # cached handle with fixed tags
    att.emit({"emotional_intensity": 0.4}, tags={"user_id": "u7", "risk_level": "LOW"})
    tel.close()

The hot path (every recording method) builds one tuple, adds its items to the buffer's list in
one call and advances a counter: no validation, no copy, no I/O, no logging, no exception, and
no lock except a brief one every 256th event while a backlog is being bounded. Pass fresh dicts
(or ones you do not mutate afterwards): the buffer refers to them until the flusher thread
encodes the batch, which happens within ``flush_interval_ms``. Everything else (tag
merge, timestamps given as datetimes, shard hash, msgpack) runs on the flusher thread; what
cannot be encoded is counted in ``stats()["errors"]`` and logged once per kind. Validation is
the worker's job: it dead-letters what is invalid.

Lifecycle: the flusher starts at construction (no connection is made until the first send);
``close()`` drains within a deadline and is idempotent; events recorded after it are counted as
dropped. Interpreter exit closes every open producer with ``exit_timeout_ms``. In a child made
by ``fork`` each producer starts over with a new producer id, an empty buffer (the parent's
buffered events stay the parent's) and its own flusher. A child that leaves with ``os._exit``
(as ``multiprocessing`` workers do) skips interpreter-exit handlers: call ``close()`` first.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from producers._buffer import EventBuffer
from producers._sender import client_from_url
from producers.config import ProducerConfig
from producers.points import LineError, record_events, rejected_event
from producers.wire import KIND_COUNT, KIND_EMIT, KIND_GAUGE, KIND_OBSERVE
from producers.write_api import WriteApi

_time = time.time
_perf = time.perf_counter
P = ParamSpec("P")
R = TypeVar("R")
Tags = Mapping[str, str] | None
BIND_CACHE_MAX: Final = 10_000

_open: set[Telemetry] = set()
_open_lock = threading.Lock()


class Timer:
    """Times a block (``with``) or every call of a function (decorator); observes milliseconds.

    The ``with`` form keeps its start time on the object: use a fresh ``timer(...)`` per block.
    The decorator form keeps it per call, so it is safe across threads and coroutines.
    """

    __slots__ = ("_field", "_measurement", "_observe", "_started", "_tags")

    def __init__(self, observe: Callable[[str, str, float, Tags], None], measurement: str, field: str,
                 tags: Tags) -> None:
        self._observe, self._measurement, self._field, self._tags = observe, measurement, field, tags
        self._started: list[float] = []

    def __enter__(self) -> Timer:
        self._started.append(_perf())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        started = self._started.pop() if self._started else _perf()
        self._observe(self._measurement, self._field, (_perf() - started) * 1000.0, self._tags)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        observe, measurement, field, tags = self._observe, self._measurement, self._field, self._tags
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def timed_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                started = _perf()
                try:
                    return await func(*args, **kwargs)
                finally:
                    observe(measurement, field, (_perf() - started) * 1000.0, tags)
            return timed_async  # type: ignore[return-value]

        @functools.wraps(func)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            started = _perf()
            try:
                return func(*args, **kwargs)
            finally:
                observe(measurement, field, (_perf() - started) * 1000.0, tags)
        return timed


class BoundTelemetry:
    """A measurement with fixed tags (from :meth:`Telemetry.bind`): the same methods, no measurement.

    Usage::

        att = tel.bind("attachment_monitoring", bot_name="elena")
        att.emit({"emotional_intensity": 0.4}, tags={"user_id": "u7"})   # tags merge, call wins
        att.count("dependency_count", 3)
    """

    __slots__ = ("__weakref__", "_append", "_check", "_check_every", "_tick", "measurement", "tags")
    _append: Callable[[tuple[Any, ...]], None]
    _tick: Callable[[], int]
    _check: Callable[[], None]
    _check_every: int

    def __init__(self, owner: Telemetry, measurement: str, tags: dict[str, str]) -> None:
        self.measurement = measurement
        self.tags = tags
        owner._wire(self)

    def emit(self, fields: Mapping[str, Any], tags: Tags = None, ts: Any = None) -> None:
        """Record one event with several fields (see :meth:`Telemetry.emit`)."""
        self._append((KIND_EMIT, self.measurement, _time() if ts is None else ts, self.tags, tags, fields,
                      None))
        if not self._tick() % self._check_every:
            self._check()

    def _one(self, kind: int, field: str, value: Any, tags: Tags, ts: Any) -> None:
        self._append((kind, self.measurement, _time() if ts is None else ts, self.tags, tags, field, value))
        if not self._tick() % self._check_every:
            self._check()

    def count(self, field: str, value: int = 1, tags: Tags = None, ts: Any = None) -> None:
        """Add ``value`` to a per-window sum."""
        self._one(KIND_COUNT, field, value, tags, ts)

    def gauge(self, field: str, value: float, tags: Tags = None, ts: Any = None) -> None:
        """Set a value; the window keeps the last by event time."""
        self._one(KIND_GAUGE, field, value, tags, ts)

    def observe(self, field: str, value: float, tags: Tags = None, ts: Any = None) -> None:
        """Record a sample for count, sum, min, max, mean and percentiles."""
        self._one(KIND_OBSERVE, field, value, tags, ts)

    def timer(self, field: str, tags: Tags = None) -> Timer:
        """Time a block or a function in milliseconds (``with`` or decorator)."""
        return Timer(lambda _m, f, v, t: self._one(KIND_OBSERVE, f, v, t, None), self.measurement,
                     field, tags)


class Telemetry:
    """A producer: bounded in-process buffer plus a background flusher writing to Redis Streams.

    Args (keyword-only; unset ones come from :class:`ProducerConfig` defaults or ``config``):
        redis_url, prefix, shards, buffer_events, stream_maxlen, flush_interval_ms, batch_max_events:
            see :class:`ProducerConfig`.
        client: a ready redis client (for example ``fakeredis.FakeRedis()``); it is not closed.
        config: a whole :class:`ProducerConfig` (the other settings override its fields).

    Raises:
        ConfigError: at construction, for a bad setting. Never afterwards.
    """

    # The hot path: callables of the current EventBuffer, copied here (and onto every bound
    # handle) so that recording costs two C calls and no attribute chain; replaced after fork
    # and by close().
    _append: Callable[[tuple[Any, ...]], None]
    _tick: Callable[[], int]
    _check: Callable[[], None]
    _check_every: int

    def __init__(self, *, redis_url: str | None = None, prefix: str | None = None, shards: int | None = None,
                 buffer_events: int | None = None, stream_maxlen: int | None = None,
                 flush_interval_ms: int | None = None, batch_max_events: int | None = None,
                 client: Any = None, config: ProducerConfig | None = None) -> None:
        overrides = {"redis_url": redis_url, "prefix": prefix, "shards": shards,
                     "buffer_events": buffer_events, "stream_maxlen": stream_maxlen,
                     "flush_interval_ms": flush_interval_ms, "batch_max_events": batch_max_events}
        base = config or ProducerConfig()
        values = {name: getattr(base, name) for name in base.__slots__}
        values.update({k: v for k, v in overrides.items() if v is not None})
        self.config = ProducerConfig(**values)
        self._client = client
        self._closed = False
        self._bound: dict[Any, BoundTelemetry] = {}
        self._handles: weakref.WeakSet[BoundTelemetry] = weakref.WeakSet()   # rewired after fork/close
        self._core = self._new_core()
        self._rewire()
        self._core.start()
        with _open_lock:
            _open.add(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Telemetry:
        """A producer configured from the TELEMETRY_* variables (``overrides`` win).

        Raises:
            ConfigError: a variable holds a bad value; the message names it.
        """
        client = overrides.pop("client", None)
        return cls(config=ProducerConfig.from_env(env, **overrides), client=client)

    def _new_core(self) -> EventBuffer:
        if self._client is not None:
            client = self._client
            factory: Callable[[], Any] = lambda: client  # noqa: E731
        else:
            factory = functools.partial(client_from_url, self.config.redis_url)
        return EventBuffer(self.config, factory, producer_id=os.urandom(8).hex(),
                           owns_client=self._client is None)

    def _copy_hot_path(self, target: Any) -> None:
        """Copy the current core's hot-path callables onto ``target`` (self or a handle)."""
        core = self._core
        target._append, target._tick, target._check, target._check_every = (
            core.append, core.tick, core.check, core.check_every)

    def _wire(self, handle: BoundTelemetry) -> None:
        """Give a new handle the hot path, and remember it so fork and close can rewire it."""
        self._copy_hot_path(handle)
        self._handles.add(handle)

    def _rewire(self) -> None:
        for target in (self, *list(self._handles)):
            self._copy_hot_path(target)

    @property
    def producer_id(self) -> str:
        """This process's producer id (16 hex chars, new after fork)."""
        return self._core.producer_id

    # -- hot path -----------------------------------------------------------------------------

    def emit(self, measurement: str, fields: Mapping[str, Any], tags: Tags = None, ts: Any = None) -> None:
        """Record one event: ``fields`` maps names to bool, int, float or str values.

        ``ts`` is the event time: float seconds since the epoch or an aware datetime; default now.
        ``fields`` and ``tags`` are not copied: pass dicts you do not mutate afterwards.
        """
        self._append((KIND_EMIT, measurement, _time() if ts is None else ts, tags, None, fields, None))
        if not self._tick() % self._check_every:
            self._check()

    def count(self, measurement: str, field: str, value: int = 1, tags: Tags = None, ts: Any = None) -> None:
        """Add ``value`` (an int) to the field's per-window sum."""
        self._append((KIND_COUNT, measurement, _time() if ts is None else ts, tags, None, field, value))
        if not self._tick() % self._check_every:
            self._check()

    def gauge(self, measurement: str, field: str, value: float, tags: Tags = None, ts: Any = None) -> None:
        """Set the field's value; the window keeps the last one by event time."""
        self._append((KIND_GAUGE, measurement, _time() if ts is None else ts, tags, None, field, value))
        if not self._tick() % self._check_every:
            self._check()

    def observe(self, measurement: str, field: str, value: float, tags: Tags = None, ts: Any = None) -> None:
        """Record a sample: the window keeps count, sum, min, max, mean, p50, p90, p99."""
        self._append((KIND_OBSERVE, measurement, _time() if ts is None else ts, tags, None, field, value))
        if not self._tick() % self._check_every:
            self._check()

    def timer(self, measurement: str, field: str, tags: Tags = None) -> Timer:
        """Time a block (``with``) or each call of a function (decorator, sync or async) in ms."""
        return Timer(self.observe, measurement, field, tags)

    def write(self, record: Any, write_precision: Any = "ns", **dict_options: Any) -> None:
        """Record what influxdb-client's ``WriteApi.write(record=...)`` accepts, as point events.

        ``record``: an ``influxdb_client.Point`` (read by attribute, influxdb-client is not
        imported), line protocol as ``str`` or ``bytes`` (one or many lines), a dict
        ``{"measurement", "tags", "fields", "time"}``, or a list of these. ``write_precision`` is
        that of integer times (``ns``, ``us``, ``ms``, ``s``); no time means now. Each point is
        one event (``stats()`` counts it), aggregated by the worker like an ``emit``; what cannot
        be read becomes a rejected event that the worker dead-letters with the reason and the
        line. Reading happens in the caller's thread (about 2 to 4 µs a point, no I/O, no lock);
        it never raises.
        """
        try:
            events, errors = record_events(record, write_precision, **dict_options)
        except Exception as exc:  # an unknown precision, a broken iterable: the whole record is one error
            events, errors = [], [LineError(1, "unparsable_line", str(exc), repr(record)[:1000])]
        if errors:
            now_ns = time.time_ns()
            events.extend(rejected_event(error, now_ns) for error in errors)
        append, tick, every = self._append, self._tick, self._check_every
        for kind, measurement, ts, tags, fields in events:  # KIND_POINT, or KIND_REJECTED
            append((kind, measurement, ts, tags, None, fields, None))
            if not tick() % every:
                self._check()

    def write_api(self, *args: Any, **kwargs: Any) -> WriteApi:
        """An object with influxdb-client's ``write``/``flush``/``close``: the one-line migration.

        Arguments (``write_options=SYNCHRONOUS`` and the like) are accepted and ignored: every
        write returns at once and never raises.
        """
        return WriteApi(self)

    def bind(self, measurement: str, **tags: str) -> BoundTelemetry:
        """A cached handle for ``measurement`` with fixed ``tags`` (the same object for equal args)."""
        try:
            key = (measurement, tuple(sorted(tags.items())))
            handle = self._bound.get(key)
        except TypeError:  # unsortable or unhashable tags: an uncached handle still works
            return BoundTelemetry(self, measurement, dict(tags))
        if handle is None:
            handle = BoundTelemetry(self, measurement, dict(tags))
            if len(self._bound) < BIND_CACHE_MAX:
                handle = self._bound.setdefault(key, handle)
        return handle

    # -- lifecycle ----------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded before the call reached Redis.

        False on timeout, or when the bound had to drop events meanwhile. Events counted as
        unencodable do not make it False (see ``stats()["errors"]``).
        """
        return self._core.flush(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush within ``timeout`` and stop the flusher; idempotent. True when nothing was left."""
        if self._closed:
            return not self._core.stats()["buffered"]
        self._closed = True
        with _open_lock:
            _open.discard(self)
        result = self._core.close(timeout)
        self._rewire()   # handles now append to the closed core's zero-length deque
        return result

    def stats(self) -> dict[str, int]:
        """Counters: emitted, sent, dropped, buffered, errors (plus send_failures).

        When nothing is being recorded, ``emitted == sent + dropped + errors + buffered``.
        """
        return self._core.stats()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        self._core = self._new_core()
        self._rewire()
        self._core.start()


def _close_all_at_exit() -> None:
    with _open_lock:
        producers = list(_open)
    for producer in producers:
        producer.close(producer.config.exit_timeout_ms / 1000.0)


def _reinit_after_fork() -> None:
    global _open_lock
    _open_lock = threading.Lock()
    for producer in list(_open):
        producer._after_fork_in_child()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)

__all__ = ["BoundTelemetry", "Telemetry", "Timer"]

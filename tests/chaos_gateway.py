"""A recording HTTP proxy in front of influxd, for fault tests.

The worker is pointed at the gateway instead of InfluxDB. Every ``/write`` is recorded (body,
when it arrived, when upstream answered, what the worker was told), and the gateway can be told to
hold writes at two moments that matter for exactly-once results:

* ``hold_before``: the write has not reached InfluxDB (a stuck write: kill the worker now and the
  points were never written);
* ``hold_after``: InfluxDB has the points but the worker has not heard so (kill the worker now and
  it dies between its write and its checkpoint, the window every at-least-once design must cover).

Usage::

    gateway = RecordingGateway(influx.url).start()
    gateway.hold_after.set()
    write = gateway.wait_held(timeout_s=10)   # a write that InfluxDB applied, reply withheld
    worker.kill(); gateway.release()
    gateway.stop()
"""

from __future__ import annotations

import gzip
import http.client
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.chaos_harness import PointKey, same_fields
from tests.services import free_port

_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})
_FORWARDED_HEADERS = ("Content-Type", "Authorization", "Accept", "Content-Encoding", "Accept-Encoding")


@dataclass(slots=True)
class WriteRecord:
    """One ``/write`` the gateway saw."""

    number: int
    label: str
    arrived_s: float
    body: bytes
    query: dict[str, str]
    upstream_status: int | None = None
    upstream_done_s: float | None = None
    delivered: bool = False
    held: str = ""
    dropped: bool = False

    @property
    def applied(self) -> bool:
        """InfluxDB accepted the points (whatever the worker heard)."""
        return self.upstream_status is not None and 200 <= self.upstream_status < 300


@dataclass(slots=True)
class Recorder:
    """Shared by several gateways so writes through all of them have one arrival order."""

    writes: list[WriteRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, label: str, body: bytes, query: dict[str, str]) -> WriteRecord:
        with self.lock:
            record = WriteRecord(len(self.writes), label, time.monotonic(), body, query)
            self.writes.append(record)
            return record


class RecordingGateway:
    """A threaded pass-through proxy to ``upstream_url`` that records and can hold writes."""

    def __init__(self, upstream_url: str, *, label: str = "gw", recorder: Recorder | None = None) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 8086)
        self.label = label
        self.recorder = recorder or Recorder()
        self.port = free_port()
        self.hold_before = threading.Event()
        self.hold_after = threading.Event()
        self._released = threading.Event()
        self._held: list[WriteRecord] = []
        self._held_changed = threading.Condition()
        self.fail_status: int | None = None
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def writes(self) -> list[WriteRecord]:
        return [w for w in self.recorder.writes if w.label == self.label]

    def start(self) -> RecordingGateway:
        gateway = self

        class Handler(_Handler):
            owner = gateway

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=f"gateway-{self.label}", daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_held(self, timeout_s: float) -> WriteRecord:
        """Block until a write is being held; return it."""
        deadline = time.monotonic() + timeout_s
        with self._held_changed:
            while not self._held:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no write reached the gateway within {timeout_s}s")
                self._held_changed.wait(remaining)
            return self._held[0]

    def release(self, *, drop: bool = False) -> None:
        """Stop holding: held writes continue (their worker may be gone by now).

        ``drop``: writes held before InfluxDB never reach it (they are answered 503), as when the
        connection of a killed worker is reset before influxd read the request.
        """
        self.hold_before.clear()
        self.hold_after.clear()
        with self._held_changed:
            for record in self._held:
                record.dropped = drop and record.held == "before"
            self._held.clear()
            self._released.set()
            self._released = threading.Event()

    def _hold(self, record: WriteRecord, moment: str) -> None:
        with self._held_changed:
            flag = self.hold_before if moment == "before" else self.hold_after
            if not flag.is_set():
                return  # released while this write was on its way
            released = self._released
            record.held = moment
            self._held.append(record)
            self._held_changed.notify_all()
        released.wait(timeout=120)

    def forward(self, method: str, path: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    owner: RecordingGateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test log stays readable; writes are in the recorder

    def do_GET(self) -> None:
        self._proxy("GET")

    def do_HEAD(self) -> None:
        self._proxy("HEAD")

    def do_POST(self) -> None:
        self._proxy("POST")

    def _proxy(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k in _FORWARDED_HEADERS if (v := self.headers.get(k)) is not None}
        path = self.path
        owner = self.owner
        record = None
        if urllib.parse.urlsplit(path).path.rstrip("/").endswith("/write"):
            plain = body or b""
            if headers.get("Content-Encoding", "").lower() == "gzip":
                plain = gzip.decompress(plain)
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
            record = owner.recorder.add(owner.label, plain, query)
            if owner.fail_status is not None:
                record.upstream_status = None
                self._reply(owner.fail_status, [], b'{"error":"gateway: injected failure"}', record)
                return
            if owner.hold_before.is_set():
                owner._hold(record, "before")
                if record.dropped:
                    self._reply(503, [], b'{"error":"gateway: dropped"}', record)
                    return
        try:
            status, response_headers, payload = owner.forward(method, path, body, headers)
        except OSError as exc:
            self._reply(503, [], f'{{"error":"gateway: upstream {exc}"}}'.encode(), record)
            return
        if record is not None:
            record.upstream_status = status
            record.upstream_done_s = time.monotonic()
            if owner.hold_after.is_set():
                owner._hold(record, "after")
        self._reply(status, response_headers, payload, record)

    def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes,
               record: WriteRecord | None) -> None:
        try:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()
            if record is not None:
                record.delivered = True
        except OSError:
            self.close_connection = True  # the worker is gone (killed while we held its write)


# --- reading recorded writes back ------------------------------------------------------------

_PRECISION_NS = {"n": 1, "ns": 1, "u": 1_000, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
ParsedPoint = tuple[tuple[str, tuple[tuple[str, str], ...], int], dict[str, Any]]


def _split(text: str, separator: str, *, limit: int = -1) -> list[str]:
    """Split on ``separator`` outside escapes and double quotes, keeping escapes in the parts."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == separator and not quoted and (limit < 0 or len(parts) < limit):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(following if following in ',= "\\' else "\\" + following)
        else:
            out.append(char)
    return "".join(out)


def _field_value(raw: str) -> Any:
    if raw.startswith('"'):
        return _unescape(raw[1:-1])
    if raw in ("t", "T", "true", "True", "TRUE"):
        return True
    if raw in ("f", "F", "false", "False", "FALSE"):
        return False
    if raw.endswith(("i", "u")):
        return int(raw[:-1])
    return float(raw)


def parse_write(record: WriteRecord) -> list[ParsedPoint]:
    """The points of one recorded ``/write`` body, keyed like the chaos reference (time in ns)."""
    scale = _PRECISION_NS[record.query.get("precision", "ns")]
    points: list[ParsedPoint] = []
    for line in record.body.decode("utf-8").split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        series, fields_text, *rest = _split(line, " ", limit=2)
        measurement, *tag_parts = _split(series, ",")
        tags = tuple(sorted((_unescape(k), _unescape(v))
                            for k, v in (_split(part, "=", limit=1) for part in tag_parts)))
        fields = {_unescape(k): _field_value(v)
                  for k, v in (_split(part, "=", limit=1) for part in _split(fields_text, ","))}
        time_ns = int(rest[0]) * scale if rest and rest[0].strip() else 0
        points.append(((_unescape(measurement), tags, time_ns), fields))
    return points


def _span(fields: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> tuple[int, int] | None:
    matches = [i for i, version in enumerate(candidates) if same_fields(version, fields)]
    return (min(matches), max(matches)) if matches else None


def stale_writes(writes: Sequence[WriteRecord], versions: Mapping[PointKey, Sequence[Mapping[str, Any]]],
                 suspect: Callable[[WriteRecord], bool]) -> list[str]:
    """Writes chosen by ``suspect`` that put back an older value of a point than one InfluxDB
    already had from a write that completed before they arrived (``versions`` from
    :func:`tests.chaos_harness.entry_versions`): what an owner that lost its lease must never do.
    """
    applied = sorted((w for w in writes if w.applied), key=lambda w: w.upstream_done_s or 0.0)
    floors: dict[PointKey, list[tuple[float, int]]] = {}
    for write in applied:
        for key, fields in parse_write(write):
            span = _span(fields, versions.get(key, ()))
            if span is not None:
                floors.setdefault(key, []).append((write.upstream_done_s or 0.0, span[0]))
    problems: list[str] = []
    for write in applied:
        if not suspect(write):
            continue
        for key, fields in parse_write(write):
            span = _span(fields, versions.get(key, ()))
            before = [lo for done, lo in floors.get(key, []) if done < write.arrived_s]
            if span is not None and before and span[1] < max(before):
                problems.append(f"write #{write.number} ({write.label}) put back version {span[1]} of {key} "
                                f"after version {max(before)} was written")
    return problems

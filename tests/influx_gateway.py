"""A test-only InfluxDB v2 front for the private influxd 1.6: ``/api/v2/write``, ``/ping``, ``/health``,
and, for ``telemetry doctor``'s v2 checks, ``GET /api/v2/buckets`` and ``POST /api/v2/query``.

InfluxDB 1.6 has no v2 write endpoint, so the v2 sink (influxdb-client) is tested through this
small threaded HTTP server: it checks the ``Authorization: Token ...`` header when told to,
forwards the body to influxd's ``/write`` (bucket -> db, same precision) and passes status codes
and error messages back in the v2 error shape (``{"code": ..., "message": ...}``). It can be told
to answer the next requests with 429/503 (with Retry-After), 401, or anything else, and it
records every request. ``POST /write`` (v1) is passed through as well, so that scripted failures
apply to the v1 sink too.

The buckets API lists influxd's databases as buckets; the query API answers the few Flux query
shapes the doctor sends, translated to InfluxQL by ``tests/flux_translate.py``, in InfluxDB 2's
annotated CSV (any other Flux is a 400, so a new query shape cannot pass unchecked). Both check
the token like writes do; an unknown bucket is InfluxDB 2's 404.

Usage::

    gw = InfluxV2Gateway(influx_server.url).start()
    sink = InfluxV2Sink(gw.url, token="t", org="o", bucket=db)
    gw.fail_next(503, retry_after="7")
    gw.stop()
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from tests.flux_translate import UnsupportedFlux, annotated_csv, translate

_V2_CODES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not found",
             413: "request too large", 422: "unprocessable entity", 429: "too many requests",
             500: "internal error", 503: "unavailable"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the gateway received."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class ScriptedResponse:
    """An answer the gateway gives instead of forwarding."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


class InfluxV2Gateway:
    """The v2 write API in front of an influxd 1.x (see the module docstring)."""

    def __init__(self, influx_url: str, *, token: str | None = None) -> None:
        self.influx_url = influx_url.rstrip("/")
        self.token = token
        """When set, writes without ``Authorization: Token <token>`` get 401."""
        self.requests: list[RecordedRequest] = []
        self._script: list[ScriptedResponse] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "gateway not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> InfluxV2Gateway:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="influx-v2-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def fail_next(self, status: int, *, times: int = 1, retry_after: str | None = None,
                  message: str | None = None) -> None:
        """Answer the next ``times`` writes with ``status`` (and Retry-After), forwarding nothing."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            for _ in range(times):
                self._script.append(ScriptedResponse(status, message or f"scripted {status}", headers))

    def writes(self) -> list[RecordedRequest]:
        """The write requests received (v2 and v1), in order."""
        with self._lock:
            return [r for r in self.requests if r.path in ("/api/v2/write", "/write")]

    # -- request handling (called from the server's threads) --------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_scripted(self) -> ScriptedResponse | None:
        with self._lock:
            return self._script.pop(0) if self._script else None

    def handle_v1_write(self, query: str, headers: dict[str, str],
                        body: bytes) -> tuple[int, dict[str, str], bytes]:
        """The answer to one ``POST /write`` (v1): scripted, or influxd's own answer."""
        scripted = self._next_scripted()
        if scripted is not None:
            error = json.dumps({"error": scripted.message}).encode()
            return scripted.status, {"Content-Type": "application/json", **scripted.headers}, error
        forward = urllib.request.Request(f"{self.influx_url}/write?{query}", data=body, method="POST")
        if "authorization" in headers:
            forward.add_header("Authorization", headers["authorization"])
        try:
            with urllib.request.urlopen(forward, timeout=30) as response:
                return response.status, {}, b""
        except urllib.error.HTTPError as exc:
            return exc.code, {"Content-Type": "application/json", **_retry_after(exc.headers)}, exc.read()
        except OSError as exc:
            return 503, {"Content-Type": "application/json"}, json.dumps({"error": str(exc)}).encode()

    def handle_write(self, params: dict[str, str], headers: dict[str, str],
                     body: bytes) -> tuple[int, dict[str, str], bytes]:
        """The answer to one ``POST /api/v2/write``: status, headers, body."""
        scripted = self._next_scripted()
        if scripted is not None:
            return _v2_error(scripted.status, scripted.message, scripted.headers)
        if self.token is not None and headers.get("authorization") != f"Token {self.token}":
            return _v2_error(401, "unauthorized access")
        bucket = params.get("bucket", "")
        if not bucket or not params.get("org"):
            return _v2_error(400, "org and bucket are required")
        db, _, rp = bucket.partition("/")
        query = {"db": db, "precision": params.get("precision", "ns")}
        if rp:
            query["rp"] = rp
        forward = urllib.request.Request(f"{self.influx_url}/write?{urllib.parse.urlencode(query)}",
                                         data=body, method="POST")
        try:
            with urllib.request.urlopen(forward, timeout=30) as response:
                return response.status, {}, b""
        except urllib.error.HTTPError as exc:
            return _v2_error(exc.code, _influx_message(exc.read()), _retry_after(exc.headers))
        except OSError as exc:  # influxd down: what a v2 server behind a dead storage would say
            return _v2_error(503, f"influxd unreachable: {exc}")


    # -- the read side: buckets and the doctor's Flux --------------------------------------

    def _refused(self, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes] | None:
        """InfluxDB 2's 401 when a token is required and the request has another or none."""
        if self.token is not None and headers.get("authorization") != f"Token {self.token}":
            return _v2_error(401, "unauthorized access")
        return None

    def _influxql(self, statement: str, db: str | None = None) -> list[dict[str, Any]]:
        """influxd's series for one InfluxQL statement (times in ns); its error as RuntimeError."""
        params = {"q": statement, "epoch": "ns", **({"db": db} if db else {})}
        with urllib.request.urlopen(f"{self.influx_url}/query?{urllib.parse.urlencode(params)}",
                                    timeout=30) as response:
            result = json.loads(response.read())["results"][0]
        if "error" in result:
            raise RuntimeError(result["error"])
        return list(result.get("series", []))

    def _databases(self) -> list[str]:
        return sorted(str(row[0]) for series in self._influxql("SHOW DATABASES")
                      for row in series.get("values", []))

    def handle_buckets(self, params: dict[str, str],
                       headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """``GET /api/v2/buckets?name=&limit=``: influxd's databases as InfluxDB 2 buckets."""
        refused = self._refused(headers)
        if refused is not None:
            return refused
        names = self._databases()
        if params.get("name"):
            names = [name for name in names if name == params["name"]]
        names = names[: int(params.get("limit") or 20)]
        buckets = [{"id": f"{n:016x}", "orgID": "0000000000000001", "type": "user", "name": name,
                    "retentionRules": [{"type": "expire", "everySeconds": 0}], "labels": [],
                    "links": {"self": f"/api/v2/buckets/{n:016x}"}} for n, name in enumerate(names, 1)]
        body = json.dumps({"links": {"self": "/api/v2/buckets"}, "buckets": buckets}).encode()
        return 200, {"Content-Type": "application/json; charset=utf-8"}, body

    def handle_query(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """``POST /api/v2/query``: one of the doctor's Flux queries, answered as InfluxDB 2 does."""
        refused = self._refused(headers)
        if refused is not None:
            return refused
        try:
            query = translate(str(json.loads(body)["query"]))
        except (ValueError, KeyError, TypeError) as exc:  # UnsupportedFlux is a ValueError
            kind = "this gateway does not translate" if isinstance(exc, UnsupportedFlux) else "bad request"
            return _v2_error(400, f"{kind}: {exc}")
        if query.bucket not in self._databases():
            return _v2_error(404, f'failed to initialize execute state: could not find bucket '
                                  f'"{query.bucket}"')
        try:
            series = self._influxql(query.influxql, query.bucket)
        except RuntimeError as exc:
            return _v2_error(500, str(exc))
        return 200, {"Content-Type": "text/csv; charset=utf-8"}, annotated_csv(query, series)


def _retry_after(headers: Any) -> dict[str, str]:
    value = headers.get("Retry-After") if headers is not None else None
    return {"Retry-After": value} if value else {}


def _influx_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")


def _v2_error(status: int, message: str,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"code": _V2_CODES.get(status, "error"), "message": message}).encode()
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body


Answer = tuple[int, dict[str, str], bytes]
Route = Callable[[str, dict[str, str], bytes], Answer]
_HEALTH: Final[Answer] = (200, {"Content-Type": "application/json"},
                          json.dumps({"name": "influxdb", "status": "pass", "message": "ready"}).encode())


def _routes(gateway: InfluxV2Gateway) -> dict[tuple[str, str], Route]:
    """(method, path) -> answer from (query string, lower-cased headers, body)."""
    def params(query: str) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(query))

    return {
        ("GET", "/ping"): lambda q, h, b: (204, {"X-Influxdb-Version": "gateway"}, b""),
        ("GET", "/health"): lambda q, h, b: _HEALTH,
        ("GET", "/api/v2/buckets"): lambda q, h, b: gateway.handle_buckets(params(q), h),
        ("POST", "/write"): gateway.handle_v1_write,
        ("POST", "/api/v2/write"): lambda q, h, b: gateway.handle_write(params(q), h, b),
        ("POST", "/api/v2/query"): lambda q, h, b: gateway.handle_query(h, b),
    }


def _handler_for(gateway: InfluxV2Gateway) -> type[BaseHTTPRequestHandler]:
    routes = _routes(gateway)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows failures, not access logs

        def _reply(self, status: int, headers: dict[str, str], body: bytes, request_body: bytes) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            gateway._record(RecordedRequest(
                method=self.command, path=parsed.path,
                params=dict(urllib.parse.parse_qsl(parsed.query)),
                headers={k.lower(): v for k, v in self.headers.items()}, body=request_body, status=status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            # One request per connection: after stop() nothing keeps answering on a kept-alive socket.
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            if body:
                self.wfile.write(body)

        def _dispatch(self, request_body: bytes) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            route = routes.get((self.command, parsed.path))
            answer = (route(parsed.query, headers, request_body) if route is not None
                      else _v2_error(404, f"path {parsed.path} not found"))
            self._reply(*answer, request_body)

        def do_GET(self) -> None:
            self._dispatch(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._dispatch(self.rfile.read(length) if length else b"")

    return Handler

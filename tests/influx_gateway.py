"""A test-only InfluxDB v2 front for the private influxd 1.6: ``/api/v2/write``, ``/ping``, ``/health``.

InfluxDB 1.6 has no v2 write endpoint, so the v2 sink (influxdb-client) is tested through this
small threaded HTTP server: it checks the ``Authorization: Token ...`` header when told to,
forwards the body to influxd's ``/write`` (bucket -> db, same precision) and passes status codes
and error messages back in the v2 error shape (``{"code": ..., "message": ...}``). It can be told
to answer the next requests with 429/503 (with Retry-After), 401, or anything else, and it
records every request. ``POST /write`` (v1) is passed through as well, so that scripted failures
apply to the v1 sink too.

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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


def _handler_for(gateway: InfluxV2Gateway) -> type[BaseHTTPRequestHandler]:
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

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/ping":
                self._reply(204, {"X-Influxdb-Version": "gateway"}, b"", b"")
            elif path == "/health":
                body = json.dumps({"name": "influxdb", "status": "pass", "message": "ready"}).encode()
                self._reply(200, {"Content-Type": "application/json"}, body, b"")
            else:
                self._reply(*_v2_error(404, f"path {path} not found"), b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parsed = urllib.parse.urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if parsed.path == "/write":
                self._reply(*gateway.handle_v1_write(parsed.query, headers, body), body)
            elif parsed.path == "/api/v2/write":
                params = dict(urllib.parse.parse_qsl(parsed.query))
                self._reply(*gateway.handle_write(params, headers, body), body)
            else:
                self._reply(*_v2_error(404, f"path {parsed.path} not found"), body)

    return Handler

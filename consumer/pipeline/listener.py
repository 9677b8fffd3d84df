"""``telemetry listen``: InfluxDB's HTTP write APIs in front of the pipeline, durable before 204.

Why: programs that are not Python (an agent, a script, Telegraf, another service) speak InfluxDB's
write API. Pointed here instead of at influxd, their points become the same point events as
``tel.write`` produces (``producers/points.py``), in the same shard streams, aggregated by the same
workers. Unlike a write buffered in memory, a 204 means the points are in Redis.

Answers (what InfluxDB's clients already know how to react to):
    204  every line is in Redis.
    400  some lines are not line protocol: the body names their line numbers; the valid lines of
         the same body are in Redis, and each bad line is too, as a rejected event the worker
         dead-letters with its reason (``unparsable_line``). Not retried by clients: nothing is lost.
    401  a token is configured and the request has none or another (``Authorization: Token …``,
         ``Bearer …``, basic auth or v1 ``u``/``p`` with the token as password).
    413  the body (after gzip) is over the limit.
    503  Redis did not confirm the entries (``Retry-After`` says when to try again). All of a
         body's entries go in one MULTI/EXEC transaction, so it is in whole or not at all; when
         the answer was lost with the connection, the listener resends the same entries (same
         sequence numbers, which the worker applies once) before anything else, and answers the
         client's retry of the same bytes from them: retried bodies are counted once.

Built on aiohttp: a maintained asyncio HTTP server that decodes gzip request bodies, enforces a
body limit and keeps connections alive, which is what write clients rely on; the parsing is ours.

One listener process is one producer id; every body takes the next sequence number of each shard
it writes to, under a lock, so that entries of one shard reach Redis in sequence order (the
worker drops an entry whose sequence is not above the last it applied for the producer).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from producers._encode import BatchEncoder
from producers.keys import stream_key
from producers.points import LineError, parse_lines, precision_factor, rejected_event
from producers.pseudonyms import Pseudonymizer
from producers.wire import encode_entry

logger = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8186
DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
RETRY_AFTER_S: Final = 1
MAX_NAMED_LINES: Final = 20
REMEMBERED_BODIES: Final = 1_024
"""Bodies answered 503 and delivered since, remembered so that a client's retry is not added again."""
VERSION_HEADER: Final = {"X-Influxdb-Version": "1.8-telemetry-listen"}


@dataclass(frozen=True, kw_only=True)
class ListenerConfig:
    """Where to listen and where to write (the streams of the producer's configuration)."""

    redis_url: str
    prefix: str
    shards: int
    stream_maxlen: int
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    token: str | None = None
    pseudonymize: tuple[str, ...] = ()
    """Tag keys whose values are pseudonymised before they reach Redis (``TELEMETRY_PSEUDONYMIZE``):
    the listener is a producer, so raw ids stop here, as they do in a pseudonymising bot process."""
    pseudonym_key: str | None = field(default=None, repr=False)

    def pseudonymizer(self) -> Pseudonymizer | None:
        """The producer's pseudonymizer for these settings, ``None`` when off."""
        if not self.pseudonymize:
            return None
        return Pseudonymizer(self.pseudonymize, (self.pseudonym_key or "").encode())


class _Metrics:
    """The listener's own Prometheus metrics, on its ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("telemetry_listen_requests", "Write requests by HTTP status",
                                ["status"], registry=self.registry)
        self.lines = Counter("telemetry_listen_lines", "Lines received, by outcome",
                             ["outcome"], registry=self.registry)
        self.seconds = Histogram("telemetry_listen_request_seconds", "Time to answer a write request",
                                 registry=self.registry)


class Listener:
    """The write endpoints over one Redis connection pool; :meth:`app` is the aiohttp application."""

    def __init__(self, config: ListenerConfig, client: Any = None) -> None:
        self.config = config
        self._client = client if client is not None else aioredis.from_url(
            config.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
        self._privacy = config.pseudonymizer()
        self._encoder = BatchEncoder(config.shards, self._privacy)
        self._producer_id = os.urandom(8).hex()
        self._sequences = [0] * max(1, config.shards)
        self._lock = asyncio.Lock()
        self._pending: tuple[bytes, list[tuple[int, dict[bytes, bytes]]]] | None = None
        self._delivered: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.metrics = _Metrics()

    def app(self) -> web.Application:
        application = web.Application(client_max_size=self.config.max_body_bytes)
        application.add_routes([
            web.post("/write", self._timed(self.write_v1)),
            web.post("/api/v2/write", self._timed(self.write_v2)),
            web.get("/ping", self.ping),   # GET also answers HEAD
            web.get("/health", self.health),
            web.get("/metrics", self.metrics_page),
        ])
        application.on_cleanup.append(self._close)
        return application

    async def _close(self, _app: web.Application) -> None:
        closer = getattr(self._client, "aclose", None) or self._client.close   # aclose: redis-py >= 5.0.1
        await closer()

    def _timed(self, handler: Callable[[web.Request], Awaitable[web.Response]]
               ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def timed(request: web.Request) -> web.Response:
            started = time.perf_counter()
            response = await handler(request)
            self.metrics.seconds.observe(time.perf_counter() - started)
            self.metrics.requests.labels(str(response.status)).inc()
            return response
        return timed

    # -- the write endpoints ----------------------------------------------------------------
    async def write_v1(self, request: web.Request) -> web.Response:
        """1.x ``POST /write?db=&rp=&precision=&u=&p=`` (db and rp are accepted, not used)."""
        return await self._write(request, request.query.get("precision") or "ns")

    async def write_v2(self, request: web.Request) -> web.Response:
        """2.x ``POST /api/v2/write?org=&bucket=&precision=`` (org and bucket accepted, not used)."""
        return await self._write(request, request.query.get("precision") or "ns")

    async def _write(self, request: web.Request, precision: str) -> web.Response:
        if not self._authorised(request):
            return _error(401, "unauthorized", "a valid token is required (Authorization: Token <token>)")
        try:
            precision_factor(precision)
        except ValueError as exc:
            return _error(400, "invalid", str(exc))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "request too large",
                          f"the body is over {self.config.max_body_bytes} bytes (TELEMETRY_LISTEN_MAX_BODY)")
        events, errors = parse_lines(body, precision)
        now_ns = time.time_ns()
        shipped: list[Any] = [*events, *(rejected_event(error, now_ns) for error in errors)]
        if shipped:
            try:
                await self._store(hashlib.blake2b(precision.encode() + b"\n" + body, digest_size=16).digest(),
                                  shipped)
            except (RedisError, OSError) as exc:
                logger.warning("Redis did not take a write (%s); answering 503, clients retry", exc)
                return _error(503, "unavailable", f"Redis is unavailable: {exc}",
                              headers={"Retry-After": str(RETRY_AFTER_S)})
        self.metrics.lines.labels("accepted").inc(len(events))
        if errors:
            self.metrics.lines.labels("unparsable").inc(len(errors))
            return _error(400, "invalid", _partial_message(errors, len(events), self._privacy))
        return web.Response(status=204, headers=VERSION_HEADER)

    async def _store(self, digest: bytes, events: list[Any]) -> None:
        """All of a body's entries in one transaction, each with its shard's next sequence number.

        A transaction whose outcome is unknown (Redis went away mid-way: applied or not) stays
        pending with its sequence numbers, and is sent again, identical, before anything else: the
        worker drops it if the first attempt was applied. A client's retry of that body (the same
        bytes) is then answered from it instead of adding the body again.
        """
        async with self._lock:
            if self._pending is not None:
                pending_digest, entries = self._pending
                await self._xadd(entries)
                self._pending = None
                self._remember(pending_digest)
            if digest in self._delivered:
                del self._delivered[digest]
                return   # the retry of a body answered 503 whose entries went in since
            encoded, _failed = self._encoder.encode(events)
            entries = []
            for shard, payload, count in encoded:
                self._sequences[shard] += 1
                fields = encode_entry(self._producer_id, self._sequences[shard], payload, count)
                entries.append((shard, fields))
            self._pending = (digest, entries)
            await self._xadd(entries)
            self._pending = None

    async def _xadd(self, entries: list[tuple[int, dict[bytes, bytes]]]) -> None:
        pipe = self._client.pipeline(transaction=True)
        for shard, fields in entries:
            pipe.xadd(stream_key(self.config.prefix, shard), fields,
                      maxlen=self.config.stream_maxlen, approximate=True)
        await pipe.execute()

    def _remember(self, digest: bytes) -> None:
        self._delivered[digest] = None
        while len(self._delivered) > REMEMBERED_BODIES:
            self._delivered.popitem(last=False)

    def _authorised(self, request: web.Request) -> bool:
        token = self.config.token
        if not token:
            return True
        offered = request.query.get("p")
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer"):
            offered = value.strip()
        elif scheme.lower() == "basic":
            try:
                offered = base64.b64decode(value.strip()).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        return offered is not None and hmac.compare_digest(offered.encode(), token.encode())

    # -- the others -------------------------------------------------------------------------
    async def ping(self, _request: web.Request) -> web.Response:
        return web.Response(status=204, headers=VERSION_HEADER)

    async def health(self, _request: web.Request) -> web.Response:
        """200 with Redis reachable, 503 without (what a load balancer should route by)."""
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            return web.json_response({"status": "fail", "message": f"Redis: {exc}"}, status=503)
        return web.json_response({"status": "pass", "message": "ready for writes"})

    async def metrics_page(self, _request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.metrics.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response


def _partial_message(errors: list[LineError], accepted: int, privacy: Pseudonymizer | None) -> str:
    """The 400's message: which lines, and what is wrong with the first (withheld like its dead
    letter when it may quote a pseudonymised tag's raw value: clients log these answers)."""
    named = ", ".join(str(error.lineno) for error in errors[:MAX_NAMED_LINES])
    more = f" and {len(errors) - MAX_NAMED_LINES} more" if len(errors) > MAX_NAMED_LINES else ""
    first = errors[0]
    detail = f"line {first.lineno}: {first.detail}"
    if privacy is not None:
        detail = str(privacy.wire_event(rejected_event(first, 0))[3]["detail"])
    return (f"partial write: unable to parse line(s) {named}{more} ({detail}); "
            f"{accepted} valid line(s) accepted, the others kept as dead letters (telemetry dlq list)")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """InfluxDB's error body shape: ``{"code": ..., "message": ...}`` (1.x reads ``error``)."""
    return web.json_response({"code": code, "message": message, "error": message}, status=status,
                             headers={**VERSION_HEADER, **(headers or {})})


def _serve_one(config: ListenerConfig, reuse_port: bool) -> None:
    web.run_app(Listener(config).app(), host=config.host, port=config.port, print=None,
                reuse_port=reuse_port or None)


def serve(config: ListenerConfig, processes: int = 1) -> None:
    """Serve until SIGINT/SIGTERM; ``processes`` > 1 shares the port among that many (SO_REUSEPORT).

    Why processes: parsing is CPU work under one interpreter lock, so one process is one core. Each
    process is its own producer (own id, own sequence numbers), which the workers dedupe apart.
    """
    logger.info("listening on http://%s:%d (POST /write, /api/v2/write) with %d process(es)",
                config.host, config.port, processes)
    if processes <= 1:
        _serve_one(config, reuse_port=False)
        return
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_serve_one, args=(config, True), daemon=True)
                for _ in range(processes)]
    for child in children:
        child.start()

    def stop(_signum: int, _frame: Any) -> None:
        for child in children:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.join()


__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_PORT", "Listener", "ListenerConfig", "serve"]

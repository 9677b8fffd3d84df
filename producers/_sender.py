"""Sending encoded batches to the shard streams, in order, with retries that can be deduplicated.

Each encoded batch becomes a *pending entry* with the next sequence number of its shard. The
entry's field map is built once and kept until Redis has acknowledged the ``XADD``: a retry after
a lost reply resends the very same producer id, sequence number and payload, so the worker can
apply it at most once (it skips an entry whose sequence is not above the highest it applied for
that producer and shard). Entries of one shard are sent in sequence order; when one fails, it and
everything after it in that shard are resent, never a later one alone.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import redis

from producers.keys import stream_key
from producers.wire import encode_entry

logger = logging.getLogger(__name__)

PendingEntry = tuple[int, int, dict[bytes, bytes], int]  # shard, sequence, fields, event count


def client_from_url(url: str, *, socket_timeout_s: float = 5.0, connect_timeout_s: float = 2.0) -> Any:
    """A redis-py client for ``url``; ``redis+cluster://`` gives a RedisCluster client.

    Retries inside redis-py are turned off for the standalone client: the flusher has its own
    backoff and must decide itself what is resent.
    """
    if "+cluster://" in url:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url.replace("+cluster://", "://", 1), socket_timeout=socket_timeout_s,
                                     socket_connect_timeout=connect_timeout_s)
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                socket_connect_timeout=connect_timeout_s, retry=Retry(NoBackoff(), 0))


class StreamSender:
    """Holds pending entries and sends them with one pipelined round trip per attempt."""

    def __init__(self, client_factory: Callable[[], Any], *, prefix: str, shards: int, stream_maxlen: int,
                 producer_id: str, owns_client: bool = True) -> None:
        self._client_factory = client_factory
        self._owns_client = owns_client
        self._client: Any = None
        self._keys = [stream_key(prefix, shard) for shard in range(shards)]
        self._key_bytes = [key.encode() for key in self._keys]
        self._maxlen = stream_maxlen
        self._maxlen_bytes = str(stream_maxlen).encode()
        self.producer_id = producer_id
        self._next_sequence = [1] * shards
        self.pending: list[PendingEntry] = []
        self.pending_events = 0
        self.sent_events = 0
        self.failures = 0
        self.consecutive_failures = 0

    def add(self, shard: int, payload: bytes, count: int) -> None:
        """Queue one encoded batch as the next entry of ``shard``."""
        sequence = self._next_sequence[shard]
        self._next_sequence[shard] = sequence + 1
        fields = encode_entry(self.producer_id, sequence, payload, count)
        self.pending.append((shard, sequence, fields, count))
        self.pending_events += count

    def send(self) -> bool:
        """Try to deliver every pending entry; True when none is left.

        Raises nothing: a Redis error leaves the undelivered entries pending for the next attempt.
        """
        if not self.pending:
            return True
        try:
            if self._client is None:
                self._client = self._client_factory()
            results = self._xadd_pending(self._client)
        except redis.RedisError as exc:
            self._failed(exc)
            return False
        except Exception as exc:  # a bad URL or client bug must not kill the flusher thread
            self._failed(exc)
            return False
        return self._settle(results)

    def _xadd_pending(self, client: Any) -> list[Any]:
        """One XADD per pending entry in one round trip; a reply or an error per entry."""
        if self._owns_client and type(client) is redis.Redis:   # built by client_from_url
            return self._xadd_on_connection(client.connection_pool)
        pipe = client.pipeline(transaction=False)   # Redis Cluster, or a client given by the caller
        for shard, _sequence, fields, _count in self.pending:
            pipe.xadd(self._keys[shard], fields, maxlen=self._maxlen, approximate=True)
        return pipe.execute(raise_on_error=False)   # type: ignore[no-any-return]

    def _xadd_on_connection(self, pool: Any) -> list[Any]:
        """The same as a pipeline, written as one buffer on one pooled connection.

        A pipeline costs the flusher more CPU than the socket: redis-py builds a command object
        per entry and packs arguments one by one, and the flusher sends several times per
        millisecond at high rates (see ``EventBuffer._stage``).
        """
        connection = pool.get_connection()
        try:
            connection.send_packed_command([b"".join(self._packed_commands())])
            results: list[Any] = []
            for _entry in self.pending:
                try:
                    results.append(connection.read_response())
                except redis.ResponseError as exc:
                    results.append(exc)
            return results
        except BaseException:
            connection.disconnect()   # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.release(connection)

    def _packed_commands(self) -> list[bytes]:
        """The pending entries' XADD commands in the Redis protocol (RESP), piece by piece."""
        pieces: list[bytes] = []
        for shard, _sequence, fields, _count in self.pending:
            args = (b"XADD", self._key_bytes[shard], b"MAXLEN", b"~", self._maxlen_bytes, b"*",
                    *itertools.chain.from_iterable(fields.items()))
            pieces.append(b"*%d\r\n" % len(args))
            for arg in args:
                pieces += (b"$%d\r\n" % len(arg), arg, b"\r\n")
        return pieces

    def _settle(self, results: list[Any]) -> bool:
        """Drop acknowledged entries; keep, per shard, the first failed entry and all after it."""
        failed_shards: set[int] = set()
        keep: list[PendingEntry] = []
        first_error: Any = None
        for entry, result in zip(self.pending, results, strict=True):
            shard = entry[0]
            if shard in failed_shards or isinstance(result, Exception):
                failed_shards.add(shard)
                keep.append(entry)
                first_error = first_error or result
            else:
                self.sent_events += entry[3]
        self.pending = keep
        self.pending_events = sum(entry[3] for entry in keep)
        if keep:
            self._failed(first_error)
            return False
        if self.consecutive_failures:
            logger.warning("telemetry: Redis writes succeed again after %d failed attempts",
                           self.consecutive_failures)
            self.consecutive_failures = 0
        return True

    def _failed(self, exc: Any) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        if self.consecutive_failures == 1 or self.consecutive_failures % 100 == 0:
            logger.warning("telemetry: Redis write failed (%s: %s); %d events kept for retry",
                           type(exc).__name__, exc, self.pending_events)
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError) and self._client is not None:
            self._reset_connections()

    def _reset_connections(self) -> None:
        try:
            pool = getattr(self._client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()
        except Exception:  # best effort: the next attempt reconnects anyway
            logger.debug("telemetry: disconnect after failure failed", exc_info=True)

    def close(self) -> None:
        """Close the client if this sender created it."""
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            try:
                client.close()
            except Exception:  # closing a broken connection may fail; nothing to recover
                logger.debug("telemetry: closing the Redis client failed", exc_info=True)

"""Where are the streams, then? The doctor's search when none of ``PREFIX:{0..N-1}`` exists.

The usual cause is a setting that differs between the producer, the worker and the doctor: a
stream prefix (``TELEMETRY_STREAM_PREFIX``) or a Redis database (the ``/N`` of
``TELEMETRY_REDIS_URL``). Shard streams are recognisable without knowing the prefix: they are
streams named ``SOMETHING:{0}``. This module looks for them in the configured database and in
every other database that holds keys (``INFO keyspace``), with a bounded ``SCAN``, and says which
setting would find them. Read-only; on Redis Cluster (one database) only the prefix is searched.

Usage::

    for found in find_streams(client, redis_url):
        print(found.redis_url, found.prefix)
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import redis

SCAN_LIMIT: Final = 20_000
"""Most keys looked at per database."""
_PATTERN: Final = "*:{0}"
_PAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class FoundStreams:
    """Shard streams of ``prefix`` in the database of ``redis_url``."""

    redis_url: str
    db: int
    prefix: str


def with_db(url: str, db: int) -> str:
    """``url`` with its database number replaced by ``db``."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


def _prefixes(client: redis.Redis[bytes]) -> list[str]:
    found: set[str] = set()
    cursor = 0
    for _page in range(SCAN_LIMIT // _PAGE):
        cursor, keys = client.scan(cursor, match=_PATTERN, count=_PAGE, _type="STREAM")
        found.update(key.decode("utf-8", "replace")[: -len(":{0}")] for key in keys)
        if not cursor:
            break
    return sorted(found)


def _databases(client: redis.Redis[bytes]) -> list[int]:
    keyspace: Mapping[str, Any] = client.info("keyspace")
    return sorted(int(name[2:]) for name in keyspace if name.startswith("db") and name[2:].isdigit())


def find_streams(client: redis.Redis[bytes], redis_url: str, timeout_s: float = 5.0) -> list[FoundStreams]:
    """Shard streams in this database and in the others that hold keys (best effort)."""
    current = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
    found = [FoundStreams(redis_url, current, prefix) for prefix in _prefixes(client)]
    with contextlib.suppress(redis.RedisError):
        for db in _databases(client):
            if db == current:
                continue
            other = redis.Redis.from_url(with_db(redis_url, db), socket_timeout=timeout_s,
                                         socket_connect_timeout=timeout_s)
            try:
                found.extend(FoundStreams(with_db(redis_url, db), db, p) for p in _prefixes(other))
            finally:
                other.close()
    return found


def discovery_fix(found: list[FoundStreams], *, prefix: str, redis_url: str) -> str | None:
    """The setting that points at the streams found, or None when none were found."""
    if not found:
        return None
    here = [f for f in found if f.redis_url == redis_url]
    best = here[0] if here else found[0]
    where = ", ".join(f"{f.prefix}:{{0}} in db {f.db}" for f in found[:5])
    settings = []
    if best.redis_url != redis_url:
        settings.append(f"TELEMETRY_REDIS_URL={best.redis_url}")
    if best.prefix != prefix:
        settings.append(f"TELEMETRY_STREAM_PREFIX={best.prefix}")
    return (f"streams found elsewhere ({where}): if they are the bot's, run the worker and doctor with "
            f"{' '.join(settings)}; otherwise point the bot's producer at this Redis and prefix")

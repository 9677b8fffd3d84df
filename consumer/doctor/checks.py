"""``telemetry doctor``: the seed's "dashboard shows no data" checklist, automated.

Each link of the chain is checked in the order data flows, and every failed check carries the
exact fix (a command or a setting):

    Redis reachable -> streams exist -> streams receive -> consumer group -> a running worker -> lag
    -> InfluxDB reachable -> credentials -> database/bucket -> recent points per measurement
    -> the worker's own telemetry -> Grafana and its ``influxdb`` datasource

Each check judges from what Redis and InfluxDB hold: a stream the worker has trimmed still says
when it last received an entry (``last-generated-id``); a worker is running when it holds a
shard lease or beats its heartbeat, not because its consumer entry is still listed in the group
(:mod:`consumer.doctor.workers`); every measurement with points is data, catalogued or not
(:mod:`consumer.doctor.points`).

A check whose prerequisite failed is ``skip`` (the first failure is the one to fix). ``warn``
marks something worth knowing that does not by itself empty a panel (a catalogued measurement
nobody emits, no worker running while nothing waits). The command exits 1 when any check is
``fail``. The Redis checks are here; the InfluxDB and Grafana ones in
:mod:`consumer.doctor.downstream`.

Usage::

    report = Doctor(WorkerConfig.from_env()).run()
    for check in report:
        print(check.status, check.title, check.fix)
"""

from __future__ import annotations

import dataclasses
from typing import Final

import redis

from consumer.admin.stream_admin import ShardInfo, StreamAdmin
from consumer.doctor.discovery import FoundStreams, discovery_fix, find_streams
from consumer.doctor.downstream import GRAFANA_DATASOURCE_UID, DownstreamChecks
from consumer.doctor.probes import DEFAULT_TIMEOUT_S, DoctorConfig
from consumer.doctor.results import CheckResult, Status, fail, ok, skip
from consumer.doctor.workers import ConsumerVerdicts, WorkerPresence, read_presence

__all__ = ["DEFAULT_LAG_LIMIT_S", "DEFAULT_POINTS_SINCE_S", "DEFAULT_RECENT_S",
           "GRAFANA_DATASOURCE_UID", "CheckResult", "Doctor", "Status"]

DEFAULT_RECENT_S: Final = 300.0
DEFAULT_LAG_LIMIT_S: Final = 60.0
DEFAULT_POINTS_SINCE_S: Final = 3600.0
DLQ_SCAN_LIMIT: Final = 10_000


_WRITE_PATH: Final = frozenset({"influx", "influx_auth", "influx_container"})
"""The InfluxDB checks whose failure stops the worker's writes."""


def _blame(lag: CheckResult, cause: CheckResult) -> CheckResult:
    return dataclasses.replace(lag, status=Status.WARN, summary=f"{lag.summary}: the worker cannot write",
                               fix=f"fix {cause.title!r} below first; the backlog is written once it can")


class Doctor(DownstreamChecks):
    """Runs every check against one configuration; :meth:`run` returns them in order."""

    def __init__(
        self,
        config: DoctorConfig,
        *,
        recent_s: float = DEFAULT_RECENT_S,
        lag_limit_s: float = DEFAULT_LAG_LIMIT_S,
        points_since_s: float = DEFAULT_POINTS_SINCE_S,
        grafana_url: str | None = None,
        grafana_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.recent_s = recent_s
        self.lag_limit_s = lag_limit_s
        self.points_since_s = points_since_s
        self.grafana_url = grafana_url.rstrip("/") if grafana_url else None
        self.grafana_token = grafana_token
        self.timeout_s = timeout_s

    def run(self) -> list[CheckResult]:
        """All checks, in the order data flows.

        A worker that cannot write falls behind, but the cause is downstream: when an InfluxDB
        check fails, a failed ``lag`` check becomes a warning pointing at it, so the first ✗ is
        the one to fix.
        """
        upstream = self.redis_checks()
        downstream = self.influx_checks()
        cause = next((r for r in downstream if r.status is Status.FAIL and r.name in _WRITE_PATH), None)
        if cause is not None:
            upstream = [_blame(r, cause) if r.name == "lag" and r.status is Status.FAIL else r
                        for r in upstream]
        return [*upstream, *downstream, *self.grafana_checks()]

    # -- Redis ---------------------------------------------------------------------------------
    def redis_checks(self) -> list[CheckResult]:
        """Reachable, streams exist and receive, group, live consumer, lag."""
        cfg = self.config
        title = "Redis reachable"
        try:
            client = redis.Redis.from_url(
                cfg.redis_url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
            )
            client.ping()
            admin = StreamAdmin(client, prefix=cfg.stream_prefix, shards=cfg.shards, group=cfg.group)
            shards = admin.overview()
            now_ms = admin.server_time_ms()
            self.dead_letters = admin.dead_letter_counts(limit=DLQ_SCAN_LIMIT)
            found = [] if any(s.exists for s in shards) else find_streams(client, cfg.redis_url,
                                                                          self.timeout_s)
            presence = read_presence(client, prefix=cfg.stream_prefix, shards=cfg.shards, now_ms=now_ms,
                                     lease_s=cfg.lease_s)
        except (redis.RedisError, ValueError) as exc:
            rest = ("streams_exist", "streams_receive", "group_exists", "consumer_live", "lag")
            return [
                fail(
                    "redis",
                    title,
                    f"{cfg.redis_url}: {exc}",
                    "start Redis (redis-server / docker compose up -d redis) or set "
                    "TELEMETRY_REDIS_URL to where it runs",
                ),
                *(skip(name, name.replace("_", " "), "Redis unreachable") for name in rest),
            ]
        results = [ok("redis", title, cfg.redis_url)]
        results.extend(self._stream_checks(shards, now_ms, presence, found))
        return results

    def _stream_checks(
        self, shards: list[ShardInfo], now_ms: int, presence: WorkerPresence, found: list[FoundStreams]
    ) -> list[CheckResult]:
        cfg = self.config
        missing = [s.key for s in shards if not s.exists]
        producer_fix = (
            f"point the bot's producer at this Redis and prefix (TELEMETRY_REDIS_URL={cfg.redis_url}, "
            f"TELEMETRY_STREAM_PREFIX={cfg.stream_prefix}); test with "
            "`telemetry emit attachment_monitoring emotional_intensity=0.5`"
        )
        results: list[CheckResult] = []
        if len(missing) == len(shards):
            results.append(
                fail(
                    "streams_exist",
                    "streams exist",
                    f"none of {cfg.stream_prefix}:{{0..{cfg.shards - 1}}} exists in this database: no "
                    "producer has sent here",
                    discovery_fix(found, prefix=cfg.stream_prefix, redis_url=cfg.redis_url) or producer_fix,
                    found=[{"redis_url": f.redis_url, "prefix": f.prefix} for f in found],
                )
            )
        else:
            note = f" ({len(missing)} not yet used: {', '.join(missing)})" if missing else ""
            results.append(
                ok("streams_exist", "streams exist", f"{len(shards) - len(missing)} of {len(shards)}{note}")
            )
        # last-generated-id too: the worker trims what it has acknowledged, so an empty stream may
        # just have received (and processed) an entry
        newest_ms = max((s.newest_ms for s in shards if s.newest_ms is not None), default=None)
        if newest_ms is None or now_ms - newest_ms > self.recent_s * 1000:
            age = "never" if newest_ms is None else f"{(now_ms - newest_ms) / 1000:.0f}s ago"
            results.append(
                fail(
                    "streams_receive",
                    "streams receive events",
                    f"newest entry: {age} (limit {self.recent_s:.0f}s)",
                    "is the bot running and processing messages? "
                    + producer_fix
                    + "; watch arrivals with `telemetry tail`",
                    newest_age_s=None if newest_ms is None else (now_ms - newest_ms) / 1000,
                )
            )
        else:
            results.append(
                ok(
                    "streams_receive",
                    "streams receive events",
                    f"newest entry {(now_ms - newest_ms) / 1000:.1f}s ago",
                    newest_age_s=(now_ms - newest_ms) / 1000,
                )
            )
        verdicts = ConsumerVerdicts(group=cfg.group, redis_url=cfg.redis_url, lag_limit_s=self.lag_limit_s)
        results.extend(verdicts.checks([s for s in shards if s.exists], presence))
        return results

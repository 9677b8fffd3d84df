"""``telemetry doctor``: the seed's "dashboard shows no data" checklist, automated.

Each link of the chain is checked in the order data flows, and every failed check carries the
exact fix (a command or a setting):

    Redis reachable -> streams exist -> streams receive -> consumer group -> live consumer -> lag
    -> InfluxDB reachable -> credentials -> database/bucket -> recent points per catalogued
    measurement -> the worker's own telemetry -> Grafana and its ``influxdb`` datasource

A check whose prerequisite failed is ``skip`` (the first failure is the one to fix). ``warn``
marks something worth knowing that does not by itself empty a panel (a catalogued measurement
nobody emits). The command exits 1 when any check is ``fail``. The Redis checks are here; the
InfluxDB and Grafana ones in :mod:`consumer.doctor_downstream`.

Usage::

    report = Doctor(WorkerConfig.from_env()).run()
    for check in report:
        print(check.status, check.title, check.fix)
"""

from __future__ import annotations

from typing import Final

import redis

from consumer.doctor_downstream import GRAFANA_DATASOURCE_UID, DownstreamChecks
from consumer.doctor_probes import DEFAULT_TIMEOUT_S, DoctorConfig
from consumer.doctor_results import CheckResult, Status, fail, ok, skip
from consumer.stream_admin import ShardInfo, StreamAdmin, entry_ms
from producers.keys import lease_key

__all__ = ["CONSUMER_IDLE_LIMIT_MS", "DEFAULT_LAG_LIMIT_S", "DEFAULT_POINTS_SINCE_S", "DEFAULT_RECENT_S",
           "GRAFANA_DATASOURCE_UID", "CheckResult", "Doctor", "Status"]

DEFAULT_RECENT_S: Final = 300.0
DEFAULT_LAG_LIMIT_S: Final = 60.0
DEFAULT_POINTS_SINCE_S: Final = 3600.0
CONSUMER_IDLE_LIMIT_MS: Final = 60_000


def _lease_owners(client: redis.Redis[bytes], cfg: DoctorConfig) -> dict[int, str]:
    """Shard -> worker currently holding its lease (``worker_id:token``), for shards with one."""
    owners: dict[int, str] = {}
    for shard in range(cfg.shards):
        value = client.get(lease_key(cfg.stream_prefix, shard))
        if value:
            owners[shard] = value.decode("utf-8", "replace").rpartition(":")[0] or "?"
    return owners


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
        """All checks, in the order data flows."""
        return [*self.redis_checks(), *self.influx_checks(), *self.grafana_checks()]

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
            owners = _lease_owners(client, cfg)
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
        results.extend(self._stream_checks(shards, now_ms, owners))
        return results

    def _stream_checks(
        self, shards: list[ShardInfo], now_ms: int, owners: dict[int, str]
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
                    f"none of {cfg.stream_prefix}:{{0..{cfg.shards - 1}}} exists: no producer has ever sent",
                    producer_fix,
                )
            )
        else:
            note = f" ({len(missing)} not yet used: {', '.join(missing)})" if missing else ""
            results.append(
                ok("streams_exist", "streams exist", f"{len(shards) - len(missing)} of {len(shards)}{note}")
            )
        newest_ms = max((entry_ms(s.last_id) for s in shards if s.last_id), default=None)
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
                )
            )
        results.extend(self._group_checks([s for s in shards if s.exists], owners))
        return results

    def _group_checks(self, shards: list[ShardInfo], owners: dict[int, str]) -> list[CheckResult]:
        cfg = self.config
        worker_fix = (
            f"start the worker with the same settings: `telemetry consume` (TELEMETRY_GROUP={cfg.group}, "
            f"TELEMETRY_REDIS_URL={cfg.redis_url}) or `docker compose up -d worker`"
        )
        if not shards:
            return [
                skip("group_exists", "consumer group exists", "no stream yet"),
                skip("consumer_live", "worker consuming", "no stream yet"),
                skip("lag", "worker keeps up", "no stream yet"),
            ]
        groups = {s.key: s.group(cfg.group) for s in shards}
        without = [key for key, g in groups.items() if g is None]
        if without:
            return [
                fail(
                    "group_exists",
                    "consumer group exists",
                    f"group {cfg.group!r} missing on {', '.join(without)}",
                    worker_fix,
                ),
                skip("consumer_live", "worker consuming", "no consumer group"),
                skip("lag", "worker keeps up", "no consumer group"),
            ]
        results = [ok("group_exists", "consumer group exists", f"{cfg.group!r} on {len(shards)} stream(s)")]
        live = {
            c.name for g in groups.values() if g for c in g.consumers if c.idle_ms <= CONSUMER_IDLE_LIMIT_MS
        }
        if live or owners:
            # A worker waiting on empty streams is not listed as a consumer by Redis 7.0 until it
            # is delivered something, but it holds its shard leases while it runs.
            who = sorted(live | set(owners.values()))
            results.append(ok("consumer_live", "worker consuming", f"live: {', '.join(who)}", leases=owners))
        else:
            results.append(
                fail(
                    "consumer_live",
                    "worker consuming",
                    f"no consumer of {cfg.group!r} active in the last {CONSUMER_IDLE_LIMIT_MS // 1000}s "
                    "and no shard lease held",
                    worker_fix,
                )
            )
        worst = max(shards, key=lambda s: groups[s.key].lag_s)  # type: ignore[union-attr]
        group = groups[worst.key]
        assert group is not None
        lag_text = f"worst {worst.key}: {group.lag_entries} entries, {group.lag_s:.1f}s behind"
        if group.lag_s > self.lag_limit_s:
            results.append(
                fail(
                    "lag",
                    "worker keeps up",
                    lag_text,
                    "the worker is behind: start more workers (shards rebalance), check InfluxDB "
                    "write latency in `telemetry top`, and `telemetry inspect` for stuck consumers",
                    lag_s=group.lag_s,
                )
            )
        else:
            results.append(ok("lag", "worker keeps up", lag_text, lag_s=group.lag_s))
        return results

"""``telemetry doctor``: the seed's "dashboard shows no data" checklist, automated.

Each link of the chain is checked in the order data flows, and every failed check carries the
exact fix (a command or a setting):

    Redis reachable -> streams exist -> streams receive -> consumer group -> live consumer -> lag
    -> InfluxDB reachable -> credentials -> database/bucket -> recent points per catalogued
    measurement -> the worker's own telemetry -> Grafana and its ``influxdb`` datasource

A check whose prerequisite failed is ``skip`` (the first failure is the one to fix). ``warn``
marks something worth knowing that does not by itself empty a panel (a catalogued measurement
nobody emits). The command exits 1 when any check is ``fail``.

Usage::

    report = Doctor(WorkerConfig.from_env()).run()
    for check in report:
        print(check.status, check.title, check.fix)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import redis

from consumer.catalogue import CATALOGUE, PIPELINE_MEASUREMENT
from consumer.doctor_probes import (
    DEFAULT_TIMEOUT_S,
    DoctorConfig,
    InfluxProbe,
    ProbeError,
    http_request,
    make_probe,
)
from consumer.stream_admin import ShardInfo, StreamAdmin, entry_ms
from producers.keys import lease_key

DEFAULT_RECENT_S: Final = 300.0
DEFAULT_LAG_LIMIT_S: Final = 60.0
DEFAULT_POINTS_SINCE_S: Final = 3600.0
CONSUMER_IDLE_LIMIT_MS: Final = 60_000
GRAFANA_DATASOURCE_UID: Final = "influxdb"


class Status(StrEnum):
    """The outcome of one check."""

    OK = "ok"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the doctor's report: what was checked, what was found, how to fix it."""

    name: str
    title: str
    status: Status
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _ok(name: str, title: str, summary: str, **details: Any) -> CheckResult:
    return CheckResult(name, title, Status.OK, summary, details=details)


def _fail(name: str, title: str, summary: str, fix: str, **details: Any) -> CheckResult:
    return CheckResult(name, title, Status.FAIL, summary, fix, details)


def _skip(name: str, title: str, because: str) -> CheckResult:
    return CheckResult(name, title, Status.SKIP, f"skipped: {because}")


def _lease_owners(client: redis.Redis, cfg: DoctorConfig) -> dict[int, str]:
    """Shard -> worker currently holding its lease (``worker_id:token``), for shards with one."""
    owners: dict[int, str] = {}
    for shard in range(cfg.shards):
        value = client.get(lease_key(cfg.stream_prefix, shard))
        if value:
            owners[shard] = value.decode("utf-8", "replace").rpartition(":")[0] or "?"
    return owners


class Doctor:
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
                _fail(
                    "redis",
                    title,
                    f"{cfg.redis_url}: {exc}",
                    "start Redis (redis-server / docker compose up -d redis) or set "
                    "TELEMETRY_REDIS_URL to where it runs",
                ),
                *(_skip(name, name.replace("_", " "), "Redis unreachable") for name in rest),
            ]
        results = [_ok("redis", title, cfg.redis_url)]
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
                _fail(
                    "streams_exist",
                    "streams exist",
                    f"none of {cfg.stream_prefix}:{{0..{cfg.shards - 1}}} exists: no producer has ever sent",
                    producer_fix,
                )
            )
        else:
            note = f" ({len(missing)} not yet used: {', '.join(missing)})" if missing else ""
            results.append(
                _ok("streams_exist", "streams exist", f"{len(shards) - len(missing)} of {len(shards)}{note}")
            )
        newest_ms = max((entry_ms(s.last_id) for s in shards if s.last_id), default=None)
        if newest_ms is None or now_ms - newest_ms > self.recent_s * 1000:
            age = "never" if newest_ms is None else f"{(now_ms - newest_ms) / 1000:.0f}s ago"
            results.append(
                _fail(
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
                _ok(
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
                _skip("group_exists", "consumer group exists", "no stream yet"),
                _skip("consumer_live", "worker consuming", "no stream yet"),
                _skip("lag", "worker keeps up", "no stream yet"),
            ]
        groups = {s.key: s.group(cfg.group) for s in shards}
        without = [key for key, g in groups.items() if g is None]
        if without:
            return [
                _fail(
                    "group_exists",
                    "consumer group exists",
                    f"group {cfg.group!r} missing on {', '.join(without)}",
                    worker_fix,
                ),
                _skip("consumer_live", "worker consuming", "no consumer group"),
                _skip("lag", "worker keeps up", "no consumer group"),
            ]
        results = [_ok("group_exists", "consumer group exists", f"{cfg.group!r} on {len(shards)} stream(s)")]
        live = {
            c.name for g in groups.values() if g for c in g.consumers if c.idle_ms <= CONSUMER_IDLE_LIMIT_MS
        }
        if live or owners:
            # A worker waiting on empty streams is not listed as a consumer by Redis 7.0 until it
            # is delivered something, but it holds its shard leases while it runs.
            who = sorted(live | set(owners.values()))
            results.append(_ok("consumer_live", "worker consuming", f"live: {', '.join(who)}", leases=owners))
        else:
            results.append(
                _fail(
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
                _fail(
                    "lag",
                    "worker keeps up",
                    lag_text,
                    "the worker is behind: start more workers (shards rebalance), check InfluxDB "
                    "write latency in `telemetry top`, and `telemetry inspect` for stuck consumers",
                    lag_s=group.lag_s,
                )
            )
        else:
            results.append(_ok("lag", "worker keeps up", lag_text, lag_s=group.lag_s))
        return results

    # -- InfluxDB ------------------------------------------------------------------------------
    def _create_fix(self) -> str:
        cfg = self.config
        if cfg.influx_api == "v1":
            db = cfg.influx_db or cfg.influx_bucket
            auth = f" -u {cfg.influx_user}:****" if cfg.influx_user else ""
            return (
                f"create it: curl -XPOST{auth} '{cfg.influx_url.rstrip('/')}/query' "
                f"--data-urlencode 'q=CREATE DATABASE \"{db}\"' (or set TELEMETRY_INFLUX_DB)"
            )
        return (
            f"create it: influx bucket create --name {cfg.influx_bucket} --org {cfg.influx_org} "
            "(or set TELEMETRY_INFLUX_BUCKET / TELEMETRY_INFLUX_ORG)"
        )

    def influx_checks(self, probe: InfluxProbe | None = None) -> list[CheckResult]:
        """Reachable, credentials, database/bucket, recent points per measurement, self-telemetry."""
        cfg = self.config
        container = "database" if cfg.influx_api == "v1" else "bucket"
        name = cfg.influx_db or cfg.influx_bucket if cfg.influx_api == "v1" else cfg.influx_bucket
        rest = [
            ("influx_auth", "InfluxDB credentials"),
            ("influx_container", f"{container} {name!r} exists"),
            ("points", "recent points per measurement"),
            ("self_telemetry", "worker self-telemetry"),
        ]
        try:
            probe = probe or make_probe(cfg, self.timeout_s)
            probe.ping()
        except ProbeError as exc:
            return [
                _fail(
                    "influx",
                    "InfluxDB reachable",
                    str(exc),
                    f"start InfluxDB (docker compose up -d influxdb) or set TELEMETRY_INFLUX_URL "
                    f"(now {cfg.influx_url}, API {cfg.influx_api}: TELEMETRY_INFLUX_API)",
                ),
                *(_skip(n, t, "InfluxDB unreachable") for n, t in rest),
            ]
        results = [_ok("influx", "InfluxDB reachable", f"{cfg.influx_url} (API {cfg.influx_api})")]
        try:
            probe.check_auth()
        except ProbeError as exc:
            fix = (
                "set TELEMETRY_INFLUX_USER and TELEMETRY_INFLUX_PASSWORD (or _PASSWORD_FILE) to a user with "
                f"read and write on {name!r}"
                if cfg.influx_api == "v1"
                else "set TELEMETRY_INFLUX_TOKEN (or _TOKEN_FILE) to a token with read/write on bucket "
                f"{name!r} "
                f"in org {cfg.influx_org!r}: influx auth create --org {cfg.influx_org} --read-buckets "
                "--write-buckets"
            )
            return [
                *results,
                _fail("influx_auth", "InfluxDB credentials", str(exc), fix),
                *(_skip(n, t, "credentials refused") for n, t in rest[1:]),
            ]
        results.append(_ok("influx_auth", "InfluxDB credentials", "accepted"))
        try:
            exists = probe.container_exists()
        except ProbeError as exc:
            exists = False
            results.append(_fail("influx_container", rest[1][1], str(exc), self._create_fix()))
        else:
            if exists:
                results.append(_ok("influx_container", rest[1][1], "found"))
            else:
                results.append(
                    _fail("influx_container", rest[1][1], f"no {container} {name!r}", self._create_fix())
                )
        if not exists:
            return [*results, *(_skip(n, t, f"no {container}") for n, t in rest[2:])]
        return [*results, *self._point_checks(probe)]

    def _point_checks(self, probe: InfluxProbe) -> list[CheckResult]:
        since = f"{self.points_since_s / 60:.0f}m"
        names = sorted(CATALOGUE)
        try:
            counts = probe.point_counts([*names, PIPELINE_MEASUREMENT], self.points_since_s)
        except ProbeError as exc:
            return [
                _fail("points", "recent points per measurement", str(exc), "see the InfluxDB log"),
                _skip("self_telemetry", "worker self-telemetry", "query failed"),
            ]
        silent = [n for n in names if not counts.get(n)]
        receiving = {n: counts[n] for n in names if counts.get(n)}
        details = {"points": receiving, "silent": silent}
        if not receiving:
            result = _fail(
                "points",
                "recent points per measurement",
                f"no points in the last {since} for any catalogued measurement",
                "data is not reaching InfluxDB: fix the first ✗ above; if all pass, check the "
                "worker's log and dead letters (`telemetry dlq list`)",
                **details,
            )
        elif silent:
            result = CheckResult(
                "points",
                "recent points per measurement",
                Status.WARN,
                f"{len(receiving)} receiving, silent in the last {since}: {', '.join(silent)}",
                "a silent measurement's component is not emitting: is it enabled in the bot, "
                "and does it call tel.bind(...).emit? (`telemetry tail --measurement NAME`)",
                details,
            )
        else:
            result = _ok("points", "recent points per measurement", f"all {len(names)} receiving", **details)
        if counts.get(PIPELINE_MEASUREMENT):
            pipeline = _ok(
                "self_telemetry",
                "worker self-telemetry",
                f"{counts[PIPELINE_MEASUREMENT]} {PIPELINE_MEASUREMENT} points in the last {since}",
            )
        else:
            pipeline = CheckResult(
                "self_telemetry",
                "worker self-telemetry",
                Status.WARN,
                f"no {PIPELINE_MEASUREMENT} points in the last {since}",
                "the worker writes them while it runs: start it (`telemetry consume`)",
            )
        return [result, pipeline]

    # -- Grafana -------------------------------------------------------------------------------
    def grafana_checks(self) -> list[CheckResult]:
        """Grafana reachable and a datasource of uid ``influxdb`` (only when GRAFANA_URL is set)."""
        if not self.grafana_url:
            return []
        headers = {"Authorization": f"Bearer {self.grafana_token}"} if self.grafana_token else {}
        try:
            status, body = http_request(f"{self.grafana_url}/api/health", timeout_s=self.timeout_s)
        except ProbeError as exc:
            return [
                _fail(
                    "grafana",
                    "Grafana reachable",
                    str(exc),
                    "start Grafana (docker compose up -d grafana) or fix GRAFANA_URL",
                ),
                _skip(
                    "grafana_datasource", f"datasource uid {GRAFANA_DATASOURCE_UID!r}", "Grafana unreachable"
                ),
            ]
        if status != 200:
            return [
                _fail("grafana", "Grafana reachable", f"/api/health answered {status}", "see Grafana's log"),
                _skip(
                    "grafana_datasource", f"datasource uid {GRAFANA_DATASOURCE_UID!r}", "Grafana unhealthy"
                ),
            ]
        results = [_ok("grafana", "Grafana reachable", self.grafana_url)]
        title = f"datasource uid {GRAFANA_DATASOURCE_UID!r}"
        status, body = http_request(
            f"{self.grafana_url}/api/datasources/uid/{GRAFANA_DATASOURCE_UID}",
            headers=headers,
            timeout_s=self.timeout_s,
        )
        if status in (401, 403):
            results.append(
                _fail(
                    "grafana_datasource",
                    title,
                    f"Grafana refused the token ({status})",
                    "set GRAFANA_TOKEN to a service-account token with the Viewer role or above",
                )
            )
        elif status == 404:
            results.append(
                _fail(
                    "grafana_datasource",
                    title,
                    "no datasource with that uid: every panel is blank",
                    "provision it: copy deploy/grafana/provisioning/datasources into Grafana's "
                    "provisioning directory (uid: influxdb) and restart Grafana, or "
                    "`telemetry dashboards push`",
                )
            )
        elif status != 200:
            results.append(
                _fail("grafana_datasource", title, f"answered {status}: {body[:200]!r}", "see Grafana's log")
            )
        else:
            source = json.loads(body)
            results.append(
                _ok(
                    "grafana_datasource",
                    title,
                    f"{source.get('name')} ({source.get('type')}) -> {source.get('url')}",
                )
            )
        return results

"""``telemetry influx setup``: the database or bucket, its retention, and downsampling, in one command.

The seed never set retention ("set retention policies" stayed advice). This module makes it one
idempotent command for both InfluxDB APIs:

- **v1** (InfluxDB 1.x, InfluxQL): ``CREATE DATABASE``; a raw retention policy (``raw``, or
  ``TELEMETRY_INFLUX_RP`` when set) made the DEFAULT so the worker's writes land in it; a long
  ``downsampled_<every>`` policy; one continuous query per catalogued measurement (and the
  worker's ``telemetry_pipeline``) that re-aggregates the window points into ``<every>`` buckets.
- **v2** (InfluxDB 2.x, via influxdb-client): the bucket with an expiry rule, a
  ``<bucket>_<every>`` bucket with the long retention, and a task running the same downsampling
  in Flux.

Downsampling keeps the field names and meaning of the window points (``docs/semantics.md``):
counts and sums add up (``event_count``, ``F_sum``, a bool's count of true, counters), ``F_min``
takes the minimum, ``F_max`` the maximum, a last value the last, and a mean ``F`` is recomputed
as ``sum(F_sum) / sum(event_count)`` (v1 only; the v2 task leaves ``F`` out, as the dashboards
read means as ``F_sum / event_count`` anyway). So the dashboards' queries read downsampled data too.
Running setup again changes nothing that is already right, and corrects what differs.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from consumer.aggregation.catalogue import CATALOGUE, PIPELINE_MEASUREMENT, Semantics
from producers.durations import parse_duration_s

DEFAULT_RAW_RP: Final = "raw"
DEFAULT_RETENTION: Final = "30d"
DEFAULT_DOWNSAMPLE_RETENTION: Final = "400d"
DEFAULT_DOWNSAMPLE_EVERY: Final = "1h"
TIMEOUT_S: Final = 30.0

# The worker's own measurement: counters add up, gauges and latency keep the worst value.
PIPELINE_SUMS: Final = ("events_in", "points_out", "dead_letters", "late_rewrites", "overflow", "duplicates",
                        "write_errors", "lost_entries", "redis_resets")
PIPELINE_MAXES: Final = ("lag_entries", "open_windows", "write_latency_ms")


class InfluxAdminError(RuntimeError):
    """InfluxDB refused a set-up statement or could not be reached; the message says which."""


@dataclass(frozen=True, slots=True)
class SetupPlan:
    """What ``setup`` makes: names and durations (``30d``, ``1h``; InfluxQL duration literals)."""

    database: str
    raw_rp: str = DEFAULT_RAW_RP
    retention: str = DEFAULT_RETENTION
    downsample_retention: str = DEFAULT_DOWNSAMPLE_RETENTION
    downsample_every: str = DEFAULT_DOWNSAMPLE_EVERY

    def __post_init__(self) -> None:
        for name in ("retention", "downsample_retention", "downsample_every"):
            parse_duration_s(f"--{name.replace('_', '-')}", getattr(self, name))

    @property
    def downsampled_rp(self) -> str:
        return f"downsampled_{self.downsample_every}"

    def seconds(self, name: str) -> int:
        return int(parse_duration_s(name, getattr(self, name)))


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _aggregates(measurement: str) -> list[tuple[str, str]]:
    """(function, field) pairs that downsample ``measurement``'s fields; ``ratio`` marks a mean."""
    if measurement == PIPELINE_MEASUREMENT:
        from consumer.core.model import DEAD_LETTER_REASONS

        sums = [*PIPELINE_SUMS, *(f"dead_letters_{reason}" for reason in DEAD_LETTER_REASONS)]
        return [("sum", f) for f in sums] + [("max", f) for f in PIPELINE_MAXES]
    pairs = [("sum", "event_count")]
    for spec in CATALOGUE[measurement].fields.values():
        name = spec.name
        if spec.semantics is Semantics.MEAN:
            pairs += [("sum", f"{name}_sum"), ("min", f"{name}_min"), ("max", f"{name}_max"), ("ratio", name)]
        elif spec.semantics is Semantics.LAST:
            pairs.append(("last", name))
        elif spec.semantics is Semantics.SUMMARY:
            pairs += [("sum", f"{name}_count"), ("sum", f"{name}_sum"), ("min", f"{name}_min"),
                      ("max", f"{name}_max"), *(("max", f"{name}_{p}") for p in ("p50", "p90", "p99"))]
        else:
            pairs.append(("sum", name))
    return pairs


def downsample_select(plan: SetupPlan, measurement: str) -> str:
    """The continuous query's body: ``SELECT … INTO downsampled FROM raw GROUP BY time(every), *``."""
    parts = []
    for function, field in _aggregates(measurement):
        if function == "ratio":
            parts.append(f"sum({_ident(field + '_sum')}) / sum({_ident('event_count')}) AS {_ident(field)}")
        else:
            parts.append(f"{function}({_ident(field)}) AS {_ident(field)}")
    db = _ident(plan.database)
    return (f"SELECT {', '.join(parts)} INTO {db}.{_ident(plan.downsampled_rp)}.{_ident(measurement)} "
            f"FROM {db}.{_ident(plan.raw_rp)}.{_ident(measurement)} "
            f"GROUP BY time({plan.downsample_every}), *")


def continuous_query_name(plan: SetupPlan, measurement: str) -> str:
    return f"downsample_{plan.downsample_every}_{measurement}"


def downsampled_measurements() -> tuple[str, ...]:
    return (*sorted(CATALOGUE), PIPELINE_MEASUREMENT)


class InfluxQLAdmin:
    """Management statements over InfluxDB 1.x's ``/query`` (POST)."""

    def __init__(self, url: str, *, user: str | None = None, password: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.password = password

    def query(self, statement: str, *, db: str | None = None) -> list[dict[str, Any]]:
        """Run one statement; return its series; :class:`InfluxAdminError` on any error."""
        params = {"q": statement}
        if db:
            params["db"] = db
        if self.user:
            params.update(u=self.user, p=self.password or "")
        request = urllib.request.Request(f"{self.url}/query", data=urllib.parse.urlencode(params).encode(),
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                body = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}") if exc.code < 500 else {"error": f"HTTP {exc.code}"}
        except OSError as exc:
            raise InfluxAdminError(f"cannot reach InfluxDB at {self.url}: {exc}") from exc
        errors = [body["error"]] if "error" in body else [r["error"] for r in body.get("results", [])
                                                          if "error" in r]
        if errors:
            raise InfluxAdminError(f"InfluxDB refused {statement[:80]!r}: {errors[0]}")
        return [s for r in body.get("results", []) for s in r.get("series", [])]

    def rows(self, statement: str, *, db: str | None = None) -> list[dict[str, Any]]:
        return [dict(zip(s["columns"], v, strict=True)) for s in self.query(statement, db=db)
                for v in s.get("values", [])]


def _duration_ns_text(seconds: int) -> str:
    """How SHOW RETENTION POLICIES prints a duration (``720h0m0s``)."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s"


def _ensure_rp(admin: InfluxQLAdmin, db: str, name: str, seconds: int, *, default: bool,
               existing: dict[str, dict[str, Any]]) -> str:
    shown = _duration_ns_text(seconds)
    literal = f"{seconds}s"
    suffix = " DEFAULT" if default else ""
    current = existing.get(name)
    if current is None:
        admin.query(f"CREATE RETENTION POLICY {_ident(name)} ON {_ident(db)} DURATION {literal} "
                    f"REPLICATION 1{suffix}")
        return f"created retention policy {name} ({shown}{', default' if default else ''})"
    if current.get("duration") != shown or (default and not current.get("default")):
        admin.query(f"ALTER RETENTION POLICY {_ident(name)} ON {_ident(db)} DURATION {literal}{suffix}")
        return f"updated retention policy {name} ({shown}{', default' if default else ''})"
    return f"retention policy {name} already right ({shown})"


def _existing_cqs(admin: InfluxQLAdmin, db: str) -> dict[str, str]:
    return {s["name"]: s.get("query", "") for series in admin.query("SHOW CONTINUOUS QUERIES")
            if series.get("name") == db for s in (dict(zip(series["columns"], v, strict=True))
                                                  for v in series.get("values", []))}


def setup_v1(admin: InfluxQLAdmin, plan: SetupPlan) -> list[str]:
    """Create or correct the database, both retention policies and the continuous queries."""
    db = plan.database
    admin.query(f"CREATE DATABASE {_ident(db)}")
    done = [f"database {db} exists"]
    existing = {row["name"]: row for row in admin.rows(f"SHOW RETENTION POLICIES ON {_ident(db)}")}
    done.append(_ensure_rp(admin, db, plan.raw_rp, plan.seconds("retention"), default=True,
                           existing=existing))
    done.append(_ensure_rp(admin, db, plan.downsampled_rp, plan.seconds("downsample_retention"),
                           default=False, existing=existing))
    cqs = _existing_cqs(admin, db)
    for measurement in downsampled_measurements():
        name = continuous_query_name(plan, measurement)
        select = downsample_select(plan, measurement)
        statement = (f"CREATE CONTINUOUS QUERY {_ident(name)} ON {_ident(db)} "
                     f"RESAMPLE FOR {2 * plan.seconds('downsample_every')}s BEGIN {select} END")
        if name in cqs:
            if _same_query(cqs[name], select):
                continue
            admin.query(f"DROP CONTINUOUS QUERY {_ident(name)} ON {_ident(db)}")
        admin.query(statement)
        done.append(f"continuous query {name}")
    done.append(f"{len(downsampled_measurements())} continuous queries downsample into {plan.downsampled_rp}")
    return done


def _same_query(shown: str, select: str) -> bool:
    normalise = "".join(ch for ch in shown.lower() if ch.isalnum())
    return "".join(ch for ch in select.lower() if ch.isalnum()) in normalise


# -- v2 -------------------------------------------------------------------------------------------

def downsample_task_flux(bucket: str, target: str, org: str, every: str, task_name: str) -> str:
    """The v2 task: the same re-aggregation as the v1 continuous queries, in Flux."""
    sums, mins, maxes, lasts = _field_sets()
    blocks = [f'option task = {{name: "{task_name}", every: {every}}}', "",
              f'data = from(bucket: "{bucket}")\n  |> range(start: -task.every)']
    for fn, fields in (("sum", sums), ("min", mins), ("max", maxes), ("last", lasts)):
        regex = "|".join(sorted(fields))
        blocks.append(f"data\n  |> filter(fn: (r) => r._field =~ /^({regex})$/)\n"
                      f"  |> aggregateWindow(every: {every}, fn: {fn}, createEmpty: false)\n"
                      f'  |> to(bucket: "{target}", org: "{org}")')
    return "\n\n".join(blocks) + "\n"


def _field_sets() -> tuple[set[str], set[str], set[str], set[str]]:
    sets: dict[str, set[str]] = {"sum": set(), "min": set(), "max": set(), "last": set()}
    for measurement in downsampled_measurements():
        for function, field in _aggregates(measurement):
            if function != "ratio":
                sets[function].add(field)
    return sets["sum"], sets["min"], sets["max"], sets["last"]


def setup_v2(url: str, token: str | None, org: str, plan: SetupPlan) -> list[str]:
    """Create or correct the bucket, the downsampled bucket and the downsampling task."""
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules
    from influxdb_client.rest import ApiException

    target = f"{plan.database}_{plan.downsample_every}"
    task_name = f"downsample {plan.database} {plan.downsample_every}"
    try:
        with InfluxDBClient(url=url, token=token or "", org=org, timeout=int(TIMEOUT_S * 1000)) as client:
            buckets = client.buckets_api()
            done = []
            for name, seconds in ((plan.database, plan.seconds("retention")),
                                  (target, plan.seconds("downsample_retention"))):
                rule = BucketRetentionRules(type="expire", every_seconds=seconds)  # type: ignore[no-untyped-call]
                bucket = buckets.find_bucket_by_name(name)
                if bucket is None:
                    buckets.create_bucket(bucket_name=name, retention_rules=rule, org=org)
                    done.append(f"created bucket {name} (retention {seconds}s)")
                elif [r.every_seconds for r in bucket.retention_rules or []] != [seconds]:
                    bucket.retention_rules = [rule]
                    buckets.update_bucket(bucket)
                    done.append(f"updated bucket {name} (retention {seconds}s)")
                else:
                    done.append(f"bucket {name} already right")
            flux = downsample_task_flux(plan.database, target, org, plan.downsample_every, task_name)
            done.append(_ensure_task(client, org, task_name, flux, plan.downsample_every))
            return done
    except ApiException as exc:
        raise InfluxAdminError(f"InfluxDB refused the set-up: HTTP {exc.status} {exc.reason}") from exc
    except OSError as exc:
        raise InfluxAdminError(f"cannot reach InfluxDB at {url}: {exc}") from exc


def _ensure_task(client: Any, org: str, name: str, flux: str, every: str) -> str:
    tasks = client.tasks_api()
    existing = [t for t in tasks.find_tasks(name=name) if t.name == name]
    if existing:
        task = existing[0]
        if task.flux == flux:
            return f"task {name!r} already right"
        task.flux = flux
        tasks.update_task(task)
        return f"updated task {name!r}"
    from influxdb_client.domain.task_create_request import TaskCreateRequest

    organizations = client.organizations_api().find_organizations(org=org)
    if not organizations:
        raise InfluxAdminError(f"organization {org!r} not found: set TELEMETRY_INFLUX_ORG")
    # The script carries its own ``option task`` (name, every); create_task_every would add another.
    request = TaskCreateRequest(flux=flux, org_id=organizations[0].id, status="active",  # type: ignore[no-untyped-call]
                                description="telemetry downsampling")
    tasks.create_task(task_create_request=request)
    return f"created task {name!r} (every {every})"


def describe(lines: Iterable[str]) -> str:
    return "\n".join(f"✓ {line}" for line in lines)

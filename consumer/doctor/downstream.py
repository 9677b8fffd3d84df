"""The doctor's checks past Redis: InfluxDB (reachable, credentials, database/bucket, recent points
per catalogued measurement, the worker's own telemetry) and Grafana (reachable, ``influxdb``
datasource).

A mixin of :class:`consumer.doctor.checks.Doctor`, which holds the settings these read.
"""

from __future__ import annotations

import json
from typing import Any, Final

from consumer.admin.stream_admin import DeadLetterCounts
from consumer.aggregation.catalogue import PIPELINE_MEASUREMENT
from consumer.dashboards.grafana import DEFAULT_DATASOURCE_UID, DEFAULT_INFLUXQL_DATASOURCE_UID
from consumer.doctor.points import no_points_check, points_check, self_telemetry_check
from consumer.doctor.probes import DoctorConfig, InfluxProbe, ProbeError, http_request, make_probe
from consumer.doctor.results import CheckResult, fail, ok, skip

GRAFANA_DATASOURCE_UID: Final = DEFAULT_DATASOURCE_UID
INFLUXQL_DATASOURCE_UID: Final = DEFAULT_INFLUXQL_DATASOURCE_UID


class DownstreamChecks:
    """InfluxDB and Grafana checks, run with the settings of the :class:`~consumer.doctor.checks.Doctor`."""

    config: DoctorConfig
    points_since_s: float
    grafana_url: str | None
    grafana_token: str | None
    timeout_s: float
    dead_letters: DeadLetterCounts | None = None
    """Dead letters by reason, when the Redis checks could read them."""

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

    def _missing_container(self, probe: InfluxProbe, container: str, name: str) -> CheckResult:
        """The ✗ for a missing database/bucket, naming the ones that exist (a setting that differs)."""
        try:
            # names starting with "_" are InfluxDB's own (_internal, _monitoring, _tasks)
            others = [c for c in probe.containers() if c != name and not c.startswith("_")]
        except ProbeError:
            others = []  # listing needs more rights than the worker's; the create fix still holds
        fix = self._create_fix()
        summary = f"no {container} {name!r}"
        if others:
            variable = "TELEMETRY_INFLUX_DB" if self.config.influx_api == "v1" else "TELEMETRY_INFLUX_BUCKET"
            listing = ", ".join(others[:10])
            summary += f"; this server has {listing}"
            fix = (f"if the worker writes to {others[0]!r}, set {variable}={others[0]} for doctor (and every "
                   f"worker); otherwise {fix}")
        return fail("influx_container", f"{container} {name!r} exists", summary, fix, others=others)

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
                fail(
                    "influx",
                    "InfluxDB reachable",
                    str(exc),
                    f"start InfluxDB (docker compose up -d influxdb) or set TELEMETRY_INFLUX_URL "
                    f"(now {cfg.influx_url}, API {cfg.influx_api}: TELEMETRY_INFLUX_API)",
                ),
                *(skip(n, t, "InfluxDB unreachable") for n, t in rest),
            ]
        results = [ok("influx", "InfluxDB reachable", f"{cfg.influx_url} (API {cfg.influx_api})")]
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
                fail("influx_auth", "InfluxDB credentials", str(exc), fix),
                *(skip(n, t, "credentials refused") for n, t in rest[1:]),
            ]
        results.append(ok("influx_auth", "InfluxDB credentials", "accepted"))
        try:
            exists = probe.container_exists()
        except ProbeError as exc:
            exists = False
            results.append(fail("influx_container", rest[1][1], str(exc), self._create_fix()))
        else:
            if exists:
                results.append(ok("influx_container", rest[1][1], "found"))
            else:
                results.append(self._missing_container(probe, container, name))
        if not exists:
            return [*results, *(skip(n, t, f"no {container}") for n, t in rest[2:])]
        return [*results, *self._point_checks(probe)]

    def _point_checks(self, probe: InfluxProbe) -> list[CheckResult]:
        try:
            counts = probe.point_counts(self.points_since_s)
            result = points_check(counts, self.points_since_s)
            if result is None:
                result = no_points_check(self._newest(probe), self.points_since_s, self.dead_letters)
            pipeline = probe.pipeline_points(self.points_since_s)
        except ProbeError as exc:
            return [
                fail("points", "recent points per measurement", str(exc), "see the InfluxDB log"),
                skip("self_telemetry", "worker self-telemetry", "query failed"),
            ]
        return [result, self_telemetry_check(pipeline, self.points_since_s)]

    @staticmethod
    def _newest(probe: InfluxProbe) -> dict[str, int]:
        newest = probe.newest_points()
        newest.pop(PIPELINE_MEASUREMENT, None)
        return newest

    # -- Grafana -------------------------------------------------------------------------------
    def grafana_checks(self) -> list[CheckResult]:
        """Grafana reachable and a datasource of uid ``influxdb`` (only when GRAFANA_URL is set)."""
        if not self.grafana_url:
            return []
        headers = {"Authorization": f"Bearer {self.grafana_token}"} if self.grafana_token else {}
        try:
            status, _body = http_request(f"{self.grafana_url}/api/health", timeout_s=self.timeout_s)
        except ProbeError as exc:
            return [
                fail(
                    "grafana",
                    "Grafana reachable",
                    str(exc),
                    "start Grafana (docker compose up -d grafana) or fix GRAFANA_URL",
                ),
                skip(
                    "grafana_datasource", f"datasource uid {GRAFANA_DATASOURCE_UID!r}", "Grafana unreachable"
                ),
            ]
        if status != 200:
            return [
                fail("grafana", "Grafana reachable", f"/api/health answered {status}", "see Grafana's log"),
                skip(
                    "grafana_datasource", f"datasource uid {GRAFANA_DATASOURCE_UID!r}", "Grafana unhealthy"
                ),
            ]
        results = [ok("grafana", "Grafana reachable", self.grafana_url)]
        results.append(self._datasource_check(headers))
        return results

    def _datasource_check(self, headers: dict[str, str]) -> CheckResult:
        """The dashboards' datasource uids (Flux ``influxdb``, InfluxQL ``influxdb-influxql``) in Grafana.

        Either flavour of the dashboards may be the one installed, so one uid present passes; with
        neither, the fix names an InfluxDB datasource Grafana has under another uid (rebuild the
        dashboards for it) or the provisioning file that creates both.
        """
        title = f"datasource uid {GRAFANA_DATASOURCE_UID!r}"
        found: dict[str, dict[str, Any]] = {}
        for uid in (GRAFANA_DATASOURCE_UID, INFLUXQL_DATASOURCE_UID):
            status, body = self._grafana_get(f"/api/datasources/uid/{uid}", headers)
            if status in (401, 403):
                return fail("grafana_datasource", title, f"Grafana refused the token ({status})",
                            "set GRAFANA_TOKEN to a service-account token with the Viewer role or above")
            if status == 200:
                found[uid] = json.loads(body)
            elif status != 404:
                return fail("grafana_datasource", title, f"answered {status}: {body[:200]!r}",
                            "see Grafana's log")
        if found:
            parts = [f"{uid}: {s.get('name')} ({s.get('type')}) -> {s.get('url')}"
                     for uid, s in found.items()]
            missing = [u for u in (GRAFANA_DATASOURCE_UID, INFLUXQL_DATASOURCE_UID) if u not in found]
            note = f"; no {missing[0]!r}: its dashboards would be blank" if missing else ""
            return ok("grafana_datasource", title, "; ".join(parts) + note, uids=sorted(found))
        return fail("grafana_datasource", title,
                    f"no datasource with uid {GRAFANA_DATASOURCE_UID!r} or {INFLUXQL_DATASOURCE_UID!r}: "
                    "every panel of the dashboards is blank", self._datasource_fix(headers))

    def _grafana_get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        assert self.grafana_url is not None
        return http_request(f"{self.grafana_url}{path}", headers=headers, timeout_s=self.timeout_s)

    def _datasource_fix(self, headers: dict[str, str]) -> str:
        provision = ("provision both: copy grafana_dashboards/provisioning/datasources/influxdb.yaml into "
                     "Grafana's provisioning/datasources directory (uid: influxdb and influxdb-influxql; "
                     "INFLUXDB_TOKEN in Grafana's environment) and restart Grafana")
        status, body = self._grafana_get("/api/datasources", headers)
        try:
            sources = json.loads(body) if status == 200 else []
        except ValueError:
            sources = []
        influx = [s for s in sources if isinstance(s, dict) and s.get("type") == "influxdb" and s.get("uid")]
        if not influx:
            return provision
        source = influx[0]
        flux = (source.get("jsonData") or {}).get("version") == "Flux"
        option = "--datasource-uid" if flux else "--influxql-datasource-uid"
        flavour = "flux" if flux else "influxql"
        return (f"Grafana has InfluxDB datasource {source.get('name')!r} (uid {source['uid']}): build the "
                f"dashboards for it, `telemetry dashboards build {option} {source['uid']} --out dashboards` "
                f"then `telemetry dashboards push --flavour {flavour} --out dashboards`; or {provision}")

"""Check the generated dashboards before Grafana shows a blank panel.

What fails validation (each is a problem line; any problem means exit 1):

- a panel, target or variable names a datasource uid that the provisioning file does not define,
  or a Flux dashboard points at the InfluxQL datasource (or the reverse);
- a query with a hard-coded time range (``range(start: -7d)``, ``now() - 7d``) instead of the
  time picker (``v.timeRangeStart``/``v.timeRangeStop``, ``$timeFilter``);
- a Flux query (panels, variables, alert rules) that InfluxData's parser rejects, checked as
  Grafana sends it (see ``fluxcheck.py``); without node the Flux check is skipped with a note;
- an InfluxQL query that InfluxDB rejects, when an InfluxDB is reachable; otherwise a syntax
  sanity check (quotes, parentheses, ``SELECT … FROM … WHERE $timeFilter``).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from consumer.dashboards.build import ALERTS_FILE, ALERTS_INFLUXQL_FILE, DATASOURCES_FILE
from consumer.dashboards.fluxcheck import FluxChecker, FluxCheckerUnavailable, as_grafana_sends, interpolate

EXPRESSION_UID: Final = "__expr__"
_FLUX_RANGE = re.compile(r"range\(([^)]*)\)")
_PICKER_RANGE: Final = "start: v.timeRangeStart, stop: v.timeRangeStop"
_HARD_CODED_QL = re.compile(r"now\(\)\s*-|time\s*[<>]=?\s*'\d", re.I)
_DATASOURCE = re.compile(r'^\s*(?:- )?(uid|version): "?([^"\n]+)"?\s*$', re.M)
QL_SAMPLES: Final = {"timeFilter": "time >= now() - 1h AND time <= now()", "__interval": "1m"}


@dataclass(frozen=True, slots=True)
class Query:
    """One query found in a generated file, with where it came from."""

    where: str
    language: str  # flux | influxql
    text: str
    datasource_uid: str


@dataclass(slots=True)
class Report:
    """Problems (validation fails) and notes (what could not be checked, and why)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def provisioned_datasources(directory: Path) -> dict[str, str]:
    """uid -> query language (``Flux``/``InfluxQL``) from the provisioning file."""
    text = (directory / DATASOURCES_FILE).read_text(encoding="utf-8")
    found: dict[str, str] = {}
    blocks = text.split("\n  - ")
    for block in blocks[1:]:
        values = dict(_DATASOURCE.findall("\n" + block))
        if "uid" in values:
            found[values["uid"]] = values.get("version", "InfluxQL")
    return found


def _targets(panel: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from panel.get("targets", [])
    for child in panel.get("panels", []):
        yield from _targets(child)


def dashboard_queries(path: Path) -> list[Query]:
    """Every query of a dashboard file: panel targets and query variables."""
    document = json.loads(path.read_text(encoding="utf-8"))
    queries = []
    for panel in document.get("panels", []):
        for target in _targets(panel):
            uid = target.get("datasource", {}).get("uid", "")
            if uid == EXPRESSION_UID:
                continue
            language = "influxql" if target.get("rawQuery") else "flux"
            queries.append(Query(f"{path.name}: {panel.get('title')} [{target.get('refId')}]", language,
                                 target.get("query", ""), uid))
    for variable in document.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query", "")
            language = "influxql" if query.lstrip().upper().startswith("SHOW") else "flux"
            queries.append(Query(f"{path.name}: variable {variable['name']}", language, query,
                                 variable.get("datasource", {}).get("uid", "")))
    return queries


def panel_datasources(path: Path) -> list[tuple[str, str]]:
    """(where, uid) of every panel-level datasource: the one Grafana uses for new queries."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return [(f"{path.name}: {panel.get('title')}", panel["datasource"].get("uid", ""))
            for panel in document.get("panels", []) if isinstance(panel.get("datasource"), dict)]


def alert_queries(directory: Path) -> list[Query]:
    """Queries of the alert rules, Flux and InfluxQL (read back from the generated YAML)."""
    found = []
    for file, language in ((ALERTS_FILE, "flux"), (ALERTS_INFLUXQL_FILE, "influxql")):
        path = directory / file
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        uids = re.findall(r'^\s*(?:- )?datasourceUid: "([^"]+)"', text, re.M)
        queries = [json.loads(q) for q in re.findall(r'^\s*query: ("(?:[^"\\]|\\.)*")\s*$', text, re.M)]
        data_uids = [u for u in uids if u != EXPRESSION_UID]
        found += [Query(f"{file}: rule {i + 1}", language, q, data_uids[i] if i < len(data_uids) else "")
                  for i, q in enumerate(queries)]
    return found


def check_ranges(query: Query) -> str | None:
    """A hard-coded range, or ``None`` when the query follows the time picker."""
    if query.language == "flux":
        for args in _FLUX_RANGE.findall(query.text):
            if args.strip() != _PICKER_RANGE:
                return f"{query.where}: hard-coded range({args}); use {_PICKER_RANGE}"
        return None
    if _HARD_CODED_QL.search(query.text):
        return f"{query.where}: hard-coded time condition; use $timeFilter"
    if query.text.upper().startswith("SELECT") and "$timeFilter" not in query.text:
        return f"{query.where}: SELECT without $timeFilter ignores the time picker"
    return None


def influxql_sample(query: str) -> str:
    """The InfluxQL as Grafana would send it for a one-hour range and "All" variables."""
    text = query.replace("$timeFilter", QL_SAMPLES["timeFilter"])
    text = text.replace("$__interval", QL_SAMPLES["__interval"])
    return interpolate(text)


def influxql_syntax_problem(query: str) -> str | None:
    """A cheap structural check used when no InfluxDB is reachable."""
    text = influxql_sample(query)
    if text.count('"') % 2 or text.count("'") % 2:
        return "unbalanced quotes"
    if text.count("(") != text.count(")"):
        return "unbalanced parentheses"
    upper = text.upper()
    if upper.startswith("SELECT") and (" FROM " not in upper or " WHERE " not in upper):
        return "SELECT needs FROM and WHERE"
    if not (upper.startswith("SELECT") or upper.startswith("SHOW")):
        return "not a SELECT or SHOW statement"
    return None


@dataclass(frozen=True, slots=True)
class InfluxQLTarget:
    """Where InfluxQL queries are run for validation (InfluxDB 1.x, or 2.x's v1 compatibility)."""

    url: str
    database: str
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def error_of(self, query: str) -> str | None:
        """InfluxDB's error for ``query`` (``None`` when it ran); raises OSError when unreachable."""
        params = {"db": self.database, "q": influxql_sample(query)}
        if self.user:
            params.update(u=self.user, p=self.password or "")
        request = urllib.request.Request(f"{self.url.rstrip('/')}/query?{urllib.parse.urlencode(params)}")
        if self.token:
            request.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            if "error" not in body:
                return f"HTTP {exc.code}"
        if "error" in body:
            return str(body["error"])
        errors = [r["error"] for r in body.get("results", []) if "error" in r]
        return errors[0] if errors else None

    def reachable(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url.rstrip('/')}/ping", timeout=3) as response:
                return bool(response.status == 204)
        except OSError:
            return False


def _check_datasources(queries: list[Query], provisioned: dict[str, str], report: Report) -> None:
    for query in queries:
        language = provisioned.get(query.datasource_uid)
        if language is None:
            report.problems.append(f"{query.where}: datasource uid {query.datasource_uid!r} is not "
                                   f"provisioned (have: {', '.join(sorted(provisioned))})")
        elif (language.lower() == "flux") != (query.language == "flux"):
            report.problems.append(f"{query.where}: {query.language} query on the {language} datasource "
                                   f"{query.datasource_uid!r}")


def _check_flux(queries: list[Query], report: Report, install: bool) -> None:
    if not queries:
        return
    try:
        checker = FluxChecker.locate(install=install)
        results = checker.check([as_grafana_sends(q.text) for q in queries])
    except FluxCheckerUnavailable as exc:
        report.notes.append(f"Flux queries not parsed: {exc}")
        return
    for query, result in zip(queries, results, strict=True):
        if not result.valid:
            report.problems.append(f"{query.where}: Flux parser rejects the query"
                                   + (f": {result.error}" if result.error else ""))


def _check_influxql(queries: list[Query], report: Report, target: InfluxQLTarget | None) -> None:
    live = target is not None and target.reachable()
    if not live:
        report.notes.append("InfluxQL checked for syntax only (no InfluxDB reachable)")
    for query in queries:
        problem = target.error_of(query.text) if live and target else influxql_syntax_problem(query.text)
        if problem and "database not found" in problem:
            report.notes.append(f"InfluxQL not run: {problem}")
            live = False
            problem = influxql_syntax_problem(query.text)
        if problem:
            report.problems.append(f"{query.where}: {problem}")


def validate(directory: Path, *, influx: InfluxQLTarget | None = None,
             install_parser: bool = False) -> Report:
    """Validate every generated file under ``directory``."""
    report = Report()
    if not (directory / DATASOURCES_FILE).exists():
        report.problems.append(f"{directory / DATASOURCES_FILE} is missing: run `telemetry dashboards build`")
        return report
    provisioned = provisioned_datasources(directory)
    queries = [q for path in sorted(directory.glob("*.json")) for q in dashboard_queries(path)]
    queries += alert_queries(directory)
    if not queries:
        report.problems.append(f"no dashboards in {directory}")
    report.checked = len(queries)
    _check_datasources(queries, provisioned, report)
    for path in sorted(directory.glob("*.json")):
        report.problems += [f"{where}: panel datasource uid {uid!r} is not provisioned"
                            for where, uid in panel_datasources(path) if uid not in provisioned]
    report.problems += [p for p in map(check_ranges, queries) if p]
    _check_flux([q for q in queries if q.language == "flux"], report, install_parser)
    _check_influxql([q for q in queries if q.language == "influxql"], report, influx)
    return report

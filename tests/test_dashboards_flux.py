"""Every Flux query the dashboards, variables, alert rules and the v2 task send, through InfluxData's parser.

The parser is the WebAssembly build in the npm package ``@influxdata/flux-lsp-browser``, run under
node by ``consumer/dashboards/flux_validate.mjs``; it is installed into a cache directory on first use.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from consumer.admin.influx_admin import downsample_task_flux
from consumer.dashboards.fluxcheck import FluxChecker, FluxCheckerUnavailable, as_grafana_sends, interpolate
from consumer.dashboards.validate import alert_queries, dashboard_queries

COMMITTED = Path(__file__).resolve().parents[1] / "grafana_dashboards"


@pytest.fixture(scope="module")
def checker() -> FluxChecker:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run InfluxData's Flux parser (apt-get install nodejs npm)")
    try:
        return FluxChecker.locate(install=True)
    except FluxCheckerUnavailable as exc:
        pytest.skip(f"Flux parser unavailable: {exc}")


def _flux_queries() -> list[tuple[str, str]]:
    found = [(q.where, q.text) for path in sorted(COMMITTED.glob("*.json")) for q in dashboard_queries(path)
             if q.language == "flux"]
    return found + [(q.where, q.text) for q in alert_queries(COMMITTED) if q.language == "flux"]


def test_every_generated_flux_query_parses_as_grafana_sends_it(checker: FluxChecker) -> None:
    queries = _flux_queries()
    assert len(queries) > 90
    results = checker.check([as_grafana_sends(text) for _, text in queries])
    rejected = [where for (where, _), result in zip(queries, results, strict=True) if not result.valid]
    assert rejected == []


def test_the_v2_downsampling_task_parses(checker: FluxChecker) -> None:
    script = downsample_task_flux("whisperengine", "whisperengine_1h", "whisperengine", "1h", "downsample")
    assert [r.valid for r in checker.check([script])] == [True]


def test_the_parser_rejects_what_grafana_would_fail_on(checker: FluxChecker) -> None:
    good = next(text for where, text in _flux_queries() if "Risk level distribution" in where)
    misspelt = good.replace("|> sum()", "|> summ()")
    assert misspelt != good
    wrong_argument = good.replace("group(columns:", "group(colums:")
    scripts = [
        as_grafana_sends(good),
        as_grafana_sends(misspelt),                                   # unknown function
        as_grafana_sends(wrong_argument),                             # unknown parameter
        interpolate(good),                                            # v.* without Grafana's v record
        as_grafana_sends(good).replace("|> range(", "|> range(("),    # syntax error
    ]
    assert [r.valid for r in checker.check(scripts)] == [True, False, False, False, False]


def test_variables_are_interpolated_before_parsing() -> None:
    query = 'from(bucket: "${bucket}") |> filter(fn: (r) => r.bot_name =~ /^${bot_name:regex}$/)'
    assert interpolate(query) == 'from(bucket: "whisperengine") |> filter(fn: (r) => r.bot_name =~ /^.*$/)'
    sent = as_grafana_sends('import "influxdata/influxdb/schema"\nschema.tagValues(bucket: "${bucket}")')
    assert sent.startswith('import "influxdata/influxdb/schema"\nv = {timeRangeStart: ')

"""``telemetry dashboards push`` against a local HTTP server that records what Grafana would receive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from consumer.cli.app import app
from tests.fake_http import JsonHandler, serving

COMMITTED = Path(__file__).resolve().parents[1] / "grafana_dashboards"
TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana:
    """Answers like Grafana's dashboard and folder API; ``status`` forces an error reply."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    folders: set[str] = field(default_factory=lambda: {"whisperengine"})

    def reply(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            return (200, {"uid": uid}) if uid in self.folders else (404, {"message": "folder not found"})
        if method == "POST" and path == "/api/folders":
            self.folders.add(body["uid"])
            return 200, {"uid": body["uid"], "title": body["title"]}
        if self.status == 401:
            return 401, {"message": "invalid API key"}
        if self.status == 412:
            return 412, {"message": "The dashboard has been changed by someone else",
                         "status": "version-mismatch"}
        if body.get("folderUid") not in self.folders:
            return 400, {"message": "folder not found"}
        uid = body["dashboard"]["uid"]
        return 200, {"id": 1, "uid": uid, "url": f"/d/{uid}/x", "status": "success", "version": 3}


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()

    class Handler(JsonHandler):
        def _handle(self) -> None:
            body = self.read_json()
            body = {} if body is None else body
            fake.requests.append({"method": self.command, "path": self.path, "body": body,
                                  "headers": {k.lower(): v for k, v in self.headers.items()}})
            self.reply_json(*fake.reply(self.command, self.path, body))

        do_GET = do_POST = _handle

    with serving(Handler) as url:
        fake.url = url
        yield fake


def _push(grafana: FakeGrafana, *extra: str) -> Any:
    arguments = ["dashboards", "push", "--grafana-url", grafana.url, "--out", str(COMMITTED), *extra]
    return CliRunner().invoke(app, arguments, env={"GRAFANA_TOKEN": TOKEN})


def test_push_posts_every_flux_dashboard_with_overwrite_into_the_folder(grafana: FakeGrafana) -> None:
    result = _push(grafana)
    assert result.exit_code == 0, result.output
    posts = [r for r in grafana.requests if r["path"] == "/api/dashboards/db"]
    committed = sorted(p for p in COMMITTED.glob("*.json") if not p.stem.endswith("_influxql"))
    expected = [json.loads(p.read_text())["uid"] for p in committed]
    assert [p["body"]["dashboard"]["uid"] for p in posts] == expected
    for post in posts:
        assert post["method"] == "POST"
        assert post["headers"]["authorization"] == f"Bearer {TOKEN}"
        assert post["headers"]["content-type"] == "application/json"
        assert post["body"]["overwrite"] is True and post["body"]["folderUid"] == "whisperengine"
        assert post["body"]["dashboard"]["id"] is None and post["body"]["dashboard"]["panels"]
    assert result.output.count("✓") == len(committed)


def test_push_influxql_flavour(grafana: FakeGrafana) -> None:
    result = _push(grafana, "--flavour", "influxql")
    assert result.exit_code == 0, result.output
    uids = [r["body"]["dashboard"]["uid"] for r in grafana.requests if r["path"] == "/api/dashboards/db"]
    assert uids and all(uid.endswith("-influxql") for uid in uids)


def test_401_is_one_line_about_the_token(grafana: FakeGrafana) -> None:
    grafana.status = 401
    result = _push(grafana)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "telemetry: Grafana rejected the token (401 unauthorized): set GRAFANA_TOKEN to a valid "
        "service-account token"]
    assert len(grafana.requests) == 1      # stops at the first failure


def test_missing_folder_says_how_to_fix_it_and_create_folder_fixes_it(grafana: FakeGrafana) -> None:
    result = _push(grafana, "--folder-uid", "nowhere")
    assert result.exit_code == 1
    assert "folder 'nowhere' not found in Grafana" in result.output and "--create-folder" in result.output
    result = _push(grafana, "--folder-uid", "nowhere", "--create-folder")
    assert result.exit_code == 0, result.output
    created = [r for r in grafana.requests if r["path"] == "/api/folders"]
    assert [c["body"] for c in created] == [{"uid": "nowhere", "title": "WhisperEngine"}]


def test_412_version_conflict_is_explained(grafana: FakeGrafana) -> None:
    grafana.status = 412
    result = _push(grafana)
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "conflicts with one in Grafana (412 version-mismatch" in line


def test_push_without_a_token_is_a_usage_error(grafana: FakeGrafana) -> None:
    result = CliRunner().invoke(app, ["dashboards", "push", "--grafana-url", grafana.url],
                                env={"GRAFANA_TOKEN": ""})
    assert result.exit_code == 2 and "GRAFANA_TOKEN" in result.output
    assert grafana.requests == []


def test_unreachable_grafana_is_one_line() -> None:
    result = CliRunner().invoke(app, ["dashboards", "push", "--grafana-url", "http://127.0.0.1:9",
                                      "--out", str(COMMITTED)], env={"GRAFANA_TOKEN": TOKEN})
    assert result.exit_code == 1 and "cannot reach Grafana" in result.output

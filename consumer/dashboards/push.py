"""Upload generated dashboards to Grafana's HTTP API (``POST /api/dashboards/db``).

Each dashboard is sent with ``overwrite: true`` into the folder whose uid is given (the
provisioned "WhisperEngine" folder, uid ``whisperengine``). Failures become one line that says
what to do: 401 (token), 404 (folder), 412 (version or name conflict).

Usage::

    client = GrafanaClient("http://localhost:3002", token)
    for path in dashboard_files(Path("grafana_dashboards"), "flux"):
        client.push(json.loads(path.read_text()), folder_uid="whisperengine")
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from consumer.dashboards.grafana import DEFAULT_FOLDER, Flavour

TIMEOUT_S: Final = 15.0
PUSH_MESSAGE: Final = "telemetry dashboards push"


class PushError(RuntimeError):
    """A dashboard could not be uploaded; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class PushResult:
    """Grafana's answer for one dashboard."""

    uid: str
    url: str
    version: int


def dashboard_files(directory: Path, flavour: Flavour) -> list[Path]:
    """The generated dashboards of one flavour (InfluxQL files end in ``_influxql.json``)."""
    files = sorted(directory.glob("*.json"))
    influxql = [p for p in files if p.stem.endswith("_influxql")]
    return influxql if flavour == "influxql" else [p for p in files if p not in influxql]


@dataclass(frozen=True, slots=True)
class GrafanaClient:
    """The few Grafana API calls ``push`` needs, over urllib."""

    url: str
    token: str

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url.rstrip('/')}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except OSError as exc:
            raise PushError(f"cannot reach Grafana at {self.url}: {exc}") from exc

    def create_folder(self, uid: str, title: str = DEFAULT_FOLDER) -> None:
        """Create the folder when it is missing (``--create-folder``)."""
        status, _ = self._call("GET", f"/api/folders/{uid}")
        if status == 200:
            return
        status, body = self._call("POST", "/api/folders", {"uid": uid, "title": title})
        if status not in (200, 409, 412):
            raise PushError(f"cannot create folder {uid!r}: HTTP {status} {body.get('message', '')}".strip())

    def push(self, dashboard: dict[str, Any], *, folder_uid: str) -> PushResult:
        """Create or overwrite ``dashboard`` in the folder; :class:`PushError` on failure."""
        uid = str(dashboard.get("uid"))
        payload = {"dashboard": {**dashboard, "id": None}, "folderUid": folder_uid, "overwrite": True,
                   "message": PUSH_MESSAGE}
        status, body = self._call("POST", "/api/dashboards/db", payload)
        if status == 200:
            return PushResult(uid, str(body.get("url", "")), int(body.get("version", 0)))
        raise PushError(_explain(status, body, uid, folder_uid))


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"message": raw[:200].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"message": str(value)}


def _explain(status: int, body: dict[str, Any], uid: str, folder_uid: str) -> str:
    message = str(body.get("message", "")).strip()
    if status == 401:
        return ("Grafana rejected the token (401 unauthorized): "
                "set GRAFANA_TOKEN to a valid service-account token")
    if status == 403:
        return "the token may not write dashboards (403 forbidden): give its service account the Editor role"
    if status == 404 or (status == 400 and "folder" in message.lower()):
        return (f"folder {folder_uid!r} not found in Grafana ({status}): provision it, or pass "
                "--create-folder")
    if status == 412:
        reason = body.get("status", "version-mismatch")
        return (f"dashboard {uid!r} conflicts with one in Grafana (412 {reason}: "
                f"{message or 'changed since'}); a dashboard with the same title exists in the folder "
                "or was changed meanwhile: rename or delete it and push again")
    return f"Grafana refused dashboard {uid!r}: HTTP {status} {message}".strip()

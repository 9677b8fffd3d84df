"""The deployment files (compose, Kubernetes, systemd, Dockerfile) agree with the code and the docs.

There is no container engine or cluster in the test environment, so these tests check what can
be checked without one: every file parses, `docker compose config` accepts the compose file where
a compose CLI exists, every ``TELEMETRY_*`` name is one the worker reads and every value parses
with :class:`~consumer.core.config.WorkerConfig`, references (volumes, ConfigMaps, Secrets, labels,
ports, provisioning files) resolve, no secret is committed, and the commands in docs/deploy.md
are the ones the files run.
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.services import InfluxServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
K8S = DEPLOY / "k8s"
UNIT = DEPLOY / "systemd" / "telemetry-worker.service"
UNIT_ENV = DEPLOY / "systemd" / "telemetry-worker.env.example"
LISTENER_UNIT = DEPLOY / "systemd" / "telemetry-listener.service"
LISTENER_UNIT_ENV = DEPLOY / "systemd" / "telemetry-listener.env.example"
UNITS = (UNIT, LISTENER_UNIT)
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
DASHBOARDS = ROOT / "grafana_dashboards"
PROVISIONING = DASHBOARDS / "provisioning"

IMAGE = "whisperengine-telemetry"
METRICS_PORT = 9108
SERVICES = {"redis", "influxdb", "worker", "listener", "prometheus", "grafana"}
PLACEHOLDER = re.compile(r"^(|change-me.*)$")
SECRET_WORDS = ("TOKEN", "PASSWORD", "KEY", "SECRET")

# Mirrors DESIGN.md's configuration table (plus the *_FILE forms of the secrets), for when the
# worker's configuration module cannot be imported.
DESIGN_VARIABLES = frozenset({
    "TELEMETRY_REDIS_URL", "TELEMETRY_STREAM_PREFIX", "TELEMETRY_SHARDS", "TELEMETRY_GROUP",
    "TELEMETRY_STREAM_MAXLEN", "TELEMETRY_BUFFER_EVENTS", "TELEMETRY_WINDOW", "TELEMETRY_GRACE",
    "TELEMETRY_ALLOWED_LATENESS", "TELEMETRY_MAX_FUTURE", "TELEMETRY_INFLUX_URL",
    "TELEMETRY_INFLUX_API", "TELEMETRY_INFLUX_TOKEN", "TELEMETRY_INFLUX_ORG",
    "TELEMETRY_INFLUX_BUCKET", "TELEMETRY_INFLUX_DB", "TELEMETRY_INFLUX_RP", "TELEMETRY_INFLUX_USER",
    "TELEMETRY_INFLUX_PASSWORD", "TELEMETRY_MAX_SERIES", "TELEMETRY_METRICS_PORT",
    "TELEMETRY_PSEUDONYMIZE", "TELEMETRY_PSEUDONYM_KEY", "TELEMETRY_INFLUX_TOKEN_FILE",
    "TELEMETRY_INFLUX_PASSWORD_FILE", "TELEMETRY_PSEUDONYM_KEY_FILE",
})


# --------------------------------------------------------------------------- helpers


def known_variables() -> frozenset[str]:
    """DESIGN's variables, plus every one the worker's configuration reads (when importable)."""
    names = set(DESIGN_VARIABLES)
    try:
        from consumer.core import config
    except ImportError:
        return frozenset(names)
    names.update(config.variable_name(f.name) for f in dataclasses.fields(config.WorkerConfig))
    names.update(config.variable_name(name) + "_FILE" for name in config.SECRET_FIELDS)
    from consumer.cli.listen import LISTEN_VARIABLES

    names.update(LISTEN_VARIABLES)
    return frozenset(names)


def assert_worker_config_accepts(env: Mapping[str, str]) -> None:
    """The worker would start with these settings (no ConfigError), when its config module exists."""
    config = pytest.importorskip("consumer.core.config")
    settings = config.WorkerConfig.from_env(dict(env))
    assert settings.metrics_port == METRICS_PORT


def read_env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """``NAME=value`` lines of a dotenv/EnvironmentFile (``#NAME=value`` too when ``commented``)."""
    values: dict[str, str] = {}
    pattern = re.compile(r"^(#)?([A-Z][A-Z0-9_]*)=(.*)$")
    for line in path.read_text().splitlines():
        match = pattern.match(line.strip())
        if match and (commented or not match.group(1)):
            values[match.group(2)] = match.group(3).strip()
    return values


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose-style ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` substitution."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if op in (":-", "-") and (current is None or (op == ":-" and current == "")):
            return arg
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise AssertionError(f"compose would stop: {name} unset ({arg})")
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a dict, whichever form (map or list) it is written in."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def bind_mounts(service: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of a service's bind mounts, host paths resolved like compose does."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((COMPOSE.parent / source).resolve(), target))
    return mounts


def k8s_documents() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object in deploy/k8s (except the kustomization) by (kind, name)."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert document, f"{path.name}: empty document"
            for key in ("apiVersion", "kind", "metadata"):
                assert key in document, f"{path.name}: no {key}"
            objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def deployment_container(name: str) -> dict[str, Any]:
    """The one container of Deployment ``name`` in deploy/k8s."""
    deployment = k8s_documents()[("Deployment", name)]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def worker_container() -> dict[str, Any]:
    return deployment_container("telemetry-worker")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    start = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[start:]


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"
                i += 1
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}$")


def dockerignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context (last matching rule wins; a rule
    matching a parent directory applies to everything inside it)."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip("/")))
        rules.append((negated, _dockerignore_regex(pattern)))
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def compose_cli() -> list[str] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` when either runs here."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return command
    return None


def clean_env() -> dict[str, str]:
    """The process environment without anything the compose file interpolates."""
    names = {m.group("name") for m in _INTERPOLATION.finditer(COMPOSE.read_text())}
    return {key: value for key, value in os.environ.items() if key not in names}


def grafana_provisioning_landed() -> bool:
    return (PROVISIONING / "dashboards").is_dir() and (PROVISIONING / "datasources").is_dir()


def provisioning_yaml(kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((PROVISIONING / kind).glob("*.y*ml")):
        yield path, yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------- docker compose


def test_compose_config_is_accepted_by_the_compose_cli(tmp_path: Path) -> None:
    command = compose_cli()
    if command is None:
        pytest.skip("no docker compose CLI (docker compose plugin or docker-compose) on this machine")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config"],
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert set(rendered["services"]) == SERVICES
    worker = rendered["services"]["worker"]
    assert Path(worker["build"]["context"]).resolve() == ROOT
    assert environment(worker)["TELEMETRY_INFLUX_TOKEN"] == read_env_file(ENV_EXAMPLE)["INFLUXDB_TOKEN"]


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    command = compose_cli()
    if command is None:
        pytest.skip("no docker compose CLI (docker compose plugin or docker-compose) on this machine")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", str(empty), "config"],
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=tmp_path)
    assert result.returncode != 0
    assert "deploy/.env" in result.stderr


def test_compose_services_have_pinned_images_healthchecks_and_restart_policies() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    assert services["redis"]["image"] == "redis:7.4"
    assert services["influxdb"]["image"] == "influxdb:2.7"
    assert re.fullmatch(r"grafana/grafana:11\.3(\.\d+)?", services["grafana"]["image"])
    assert services["worker"]["image"].startswith(f"{IMAGE}:")
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name} healthcheck has no {key}"
        assert service.get("restart") == "unless-stopped", name


def test_compose_redis_is_persistent_and_never_evicts() -> None:
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_compose_influxdb_is_initialised_with_the_whisperengine_org_and_bucket() -> None:
    env = environment(compose()["services"]["influxdb"])
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert env["DOCKER_INFLUXDB_INIT_ORG"] == "whisperengine"
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"] == "whisperengine"
    for name in ("USERNAME", "PASSWORD", "ADMIN_TOKEN", "RETENTION"):
        assert f"DOCKER_INFLUXDB_INIT_{name}" in env
    assert env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"].startswith("${INFLUXDB_TOKEN")


def test_compose_named_volumes_are_declared_and_used() -> None:
    document = compose()
    declared = set(document["volumes"])
    used = set()
    for service in document["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    data_paths = {"redis": "/data", "influxdb": "/var/lib/influxdb2", "grafana": "/var/lib/grafana",
                  "prometheus": "/prometheus"}
    for name, path in data_paths.items():
        volumes = document["services"][name]["volumes"]
        assert any(v.split(":")[1] == path and v.split(":")[0] in declared for v in volumes), name


def test_compose_listener_writes_the_workers_streams_and_needs_a_token() -> None:
    services = compose()["services"]
    listener, worker = environment(services["listener"]), environment(services["worker"])
    for name in ("TELEMETRY_REDIS_URL", "TELEMETRY_STREAM_PREFIX", "TELEMETRY_SHARDS"):
        assert listener[name] == worker[name], name
    assert listener["TELEMETRY_LISTEN_TOKEN"].startswith("${TELEMETRY_LISTEN_TOKEN:?")
    assert services["listener"]["image"] == services["worker"]["image"]
    assert services["listener"]["command"][0] == "listen"
    assert "/health" in " ".join(services["listener"]["healthcheck"]["test"])


def test_compose_worker_settings_are_known_variables_that_the_worker_accepts() -> None:
    worker = compose()["services"]["worker"]
    env = environment(worker)
    telemetry = {k: v for k, v in env.items() if k.startswith("TELEMETRY_")}
    assert set(telemetry) == set(env), "the worker gets only TELEMETRY_* settings"
    unknown = set(telemetry) - known_variables()
    assert not unknown, f"not in DESIGN's variable set: {sorted(unknown)}"
    example = read_env_file(ENV_EXAMPLE)
    resolved = {name: interpolate(value, example) for name, value in telemetry.items()}
    assert resolved["TELEMETRY_REDIS_URL"] == "redis://redis:6379/0"
    assert resolved["TELEMETRY_INFLUX_URL"] == "http://influxdb:8086"
    assert int(resolved["TELEMETRY_METRICS_PORT"]) == METRICS_PORT
    assert_worker_config_accepts(resolved)
    assert worker["build"]["dockerfile"] == "Dockerfile"
    build = worker["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in " ".join(worker["healthcheck"]["test"])
    assert worker["stop_signal"] == "SIGTERM"
    assert set(worker["depends_on"]) == {"redis", "influxdb"}


def test_compose_commits_no_secret_and_the_env_example_defines_every_required_variable() -> None:
    document = compose()
    example = read_env_file(ENV_EXAMPLE)
    for name, service in document["services"].items():
        for key, value in environment(service).items():
            if any(word in key for word in SECRET_WORDS):
                assert value.startswith("${"), f"{name}.{key} is a literal, not from the environment"
    for key, value in example.items():
        if any(word in key for word in SECRET_WORDS):
            assert PLACEHOLDER.match(value), f".env.example {key} holds a value, not a placeholder"
    text = COMPOSE.read_text()
    for match in _INTERPOLATION.finditer(text):
        if match.group("op") in (":?", "?", None):
            assert match.group("name") in example, f"{match.group('name')} missing from .env.example"
    # every value resolves from the example alone: `compose config` would not stop
    for service in document["services"].values():
        for value in environment(service).values():
            interpolate(value, example)
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def test_compose_prometheus_scrapes_the_worker_and_grafana_reads_prometheus() -> None:
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    worker_job = jobs["telemetry-worker"]
    targets = [(name, sd["port"]) for sd in worker_job["dns_sd_configs"] for name in sd["names"]]
    assert targets == [("worker", METRICS_PORT)]
    assert worker_job["metrics_path"] == "/metrics"
    services = compose()["services"]
    grafana_mounts = {target: source for source, target in bind_mounts(services["grafana"])}
    prometheus_mounts = {target: source for source, target in bind_mounts(services["prometheus"])}
    assert prometheus_mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    datasource_files = [source for target, source in grafana_mounts.items()
                        if target.startswith("/etc/grafana/provisioning/datasources/")]
    datasources = [ds for path in datasource_files if path.exists()
                   for ds in yaml.safe_load(path.read_text())["datasources"]]
    prometheus = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert len(prometheus) == 1
    assert prometheus[0]["url"] == "http://prometheus:9090"


def test_compose_grafana_listens_on_host_port_3002() -> None:
    grafana = compose()["services"]["grafana"]
    example = read_env_file(ENV_EXAMPLE)
    ports = [interpolate(port, example) for port in grafana["ports"]]
    assert ports == ["127.0.0.1:3002:3000"]


def test_compose_bind_mounts_exist() -> None:
    missing = []
    for name, service in compose()["services"].items():
        for source, target in bind_mounts(service):
            if not source.exists():
                missing.append((name, source, target))
    generated = [m for m in missing if DASHBOARDS in m[1].parents or m[1] == DASHBOARDS]
    if missing and missing == generated and not grafana_provisioning_landed():
        pytest.skip("grafana_dashboards/provisioning has not been generated yet")
    assert not missing, f"bind-mount sources missing: {missing}"


def test_grafana_provisioning_is_mounted_where_its_files_point() -> None:
    if not grafana_provisioning_landed():
        pytest.skip("grafana_dashboards/provisioning has not been generated yet")
    grafana = compose()["services"]["grafana"]
    mounts = bind_mounts(grafana)
    by_target = {target: source for source, target in mounts}
    assert by_target.get("/etc/grafana/provisioning/dashboards") == PROVISIONING / "dashboards"
    if (PROVISIONING / "alerting").is_dir():
        assert by_target.get("/etc/grafana/provisioning/alerting") == PROVISIONING / "alerting"
    # each dashboard provider's path lies inside a mount of grafana_dashboards/
    providers = [p for _, doc in provisioning_yaml("dashboards") for p in doc.get("providers", [])]
    assert providers, "no dashboard provider provisioned"
    for provider in providers:
        container_path = PurePosixPath(provider["options"]["path"])
        host = next((source / container_path.relative_to(target) for source, target in mounts
                     if PurePosixPath(target) in (container_path, *container_path.parents)), None)
        assert host is not None, f"provider path {container_path} is not mounted"
        assert any(host.rglob("*.json")), f"no dashboards under {host}"


def test_grafana_gets_the_influxdb_datasource_and_its_variables() -> None:
    if not grafana_provisioning_landed():
        pytest.skip("grafana_dashboards/provisioning has not been generated yet")
    grafana = compose()["services"]["grafana"]
    mounted = [source for source, target in bind_mounts(grafana)
               if target.startswith("/etc/grafana/provisioning/datasources")]
    files = [f for source in mounted
             for f in ([source] if source.is_file() else sorted(source.glob("*.y*ml")))]
    datasources = [ds for path in files for ds in yaml.safe_load(path.read_text())["datasources"]]
    flux = [ds for ds in datasources if ds.get("uid") == "influxdb"]
    assert len(flux) == 1, "exactly one datasource of uid influxdb"
    assert flux[0]["type"] == "influxdb"
    assert flux[0]["jsonData"]["version"] == "Flux"
    assert flux[0]["jsonData"]["organization"] == "whisperengine"
    assert flux[0]["jsonData"]["defaultBucket"] == "whisperengine"
    assert flux[0]["url"] == "http://influxdb:8086"
    env = environment(grafana)
    provisioned = [*files, *(PROVISIONING / "alerting").glob("*.y*ml")]
    for path in provisioned:
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", path.read_text()):
            if name.startswith("__"):
                continue
            assert name in env, f"{path.name} reads ${name}, which the grafana service does not set"


# --------------------------------------------------------------------------- Kubernetes


def test_kustomization_lists_exactly_the_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert {kind for kind, _ in k8s_documents()} == {
        "Namespace", "ConfigMap", "Secret", "Deployment", "PodDisruptionBudget", "Service"}
    assert kustomization["images"][0]["name"] == IMAGE


def test_k8s_deployment_has_replicas_probes_and_resources() -> None:
    deployment = k8s_documents()[("Deployment", "telemetry-worker")]
    assert deployment["spec"]["replicas"] == 2
    container = worker_container()
    assert container["image"].split(":")[0] == IMAGE
    assert container["args"] == ["consume"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/healthz", probe
        assert ports[http["port"]] == METRICS_PORT, probe
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][section]), section
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_k8s_selectors_match_the_pod_labels() -> None:
    objects = k8s_documents()
    deployment = objects[("Deployment", "telemetry-worker")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    pdb = objects[("PodDisruptionBudget", "telemetry-worker")]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    service = objects[("Service", "telemetry-worker-metrics")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {port["name"] for port in worker_container()["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names


def test_k8s_config_and_secret_references_resolve() -> None:
    objects = k8s_documents()
    container = worker_container()
    for source in container["envFrom"]:
        assert ("ConfigMap", source["configMapRef"]["name"]) in objects
    secret_refs = {}
    for variable in container["env"]:
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            secret = objects[("Secret", ref["name"])]
            assert ref["key"] in secret["stringData"], ref
            secret_refs[variable["name"]] = secret["stringData"][ref["key"]]
    assert set(secret_refs) == {"TELEMETRY_INFLUX_TOKEN", "TELEMETRY_PSEUDONYM_KEY"}
    assert all(PLACEHOLDER.match(value) for value in secret_refs.values()), "Secret holds a real value"
    secret_text = (K8S / "secret.yaml").read_text()
    assert "PLACEHOLDER" in secret_text and "kubectl" in secret_text
    config_map = objects[("ConfigMap", "telemetry-worker-config")]["data"]
    assert not [k for k in config_map if any(word in k for word in SECRET_WORDS)], "secret in ConfigMap"


def test_k8s_settings_are_known_variables_that_the_worker_accepts() -> None:
    config_map = k8s_documents()[("ConfigMap", "telemetry-worker-config")]["data"]
    env_names = set(config_map) | {v["name"] for v in worker_container()["env"]}
    unknown = env_names - known_variables()
    assert not unknown, f"not in DESIGN's variable set: {sorted(unknown)}"
    env = {**config_map, "TELEMETRY_INFLUX_TOKEN": "t", "TELEMETRY_PSEUDONYM_KEY": "k"}
    assert_worker_config_accepts(env)


def test_k8s_kustomize_renders_into_the_namespace() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = list(yaml.safe_load_all(result.stdout))
    assert len(rendered) == len(k8s_documents())
    for document in rendered:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "whisperengine", document["kind"]


# --------------------------------------------------------------------------- systemd


def unit(path: Path = UNIT) -> configparser.ConfigParser:
    """A systemd unit file's sections and keys (a repeated key keeps its last value)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_systemd_unit_has_the_expected_keys() -> None:
    parsed = unit()
    assert parsed.sections() == ["Unit", "Service", "Install"]
    service = parsed["Service"]
    assert service["User"] == "telemetry"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert re.fullmatch(r"\d+s?", service["TimeoutStopSec"])
    assert service["ExecStart"].split()[-2:] == ["telemetry", "consume"] or \
        service["ExecStart"].endswith("/telemetry consume")
    assert service["EnvironmentFile"].startswith("/etc/")
    assert service["RestartPreventExitStatus"] == "2"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes"}.items():
        assert service[key] == value, key
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in parsed["Unit"]["After"]


def test_systemd_environment_example_holds_known_variables_the_worker_accepts() -> None:
    values = read_env_file(UNIT_ENV, commented=True)
    unknown = set(values) - known_variables()
    assert not unknown, f"not in DESIGN's variable set: {sorted(unknown)}"
    for key, value in values.items():
        if any(word in key for word in SECRET_WORDS):
            assert PLACEHOLDER.match(value), f"{key} holds a value, not a placeholder"
    active = read_env_file(UNIT_ENV)
    assert {"TELEMETRY_REDIS_URL", "TELEMETRY_INFLUX_URL", "TELEMETRY_INFLUX_TOKEN"} <= set(active)
    assert_worker_config_accepts(active)


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.name)
def test_systemd_analyze_verify_finds_nothing_but_the_missing_install(path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    exec_path = unit(path)["Service"]["ExecStart"].split()[0]
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if line.strip() and exec_path not in line]
    assert complaints == []


# --------------------------------------------------------------------------- Dockerfile and docs


def test_dockerfile_runs_telemetry_consume_as_a_non_root_user() -> None:
    stage = final_stage()
    instructions = dict(stage)
    assert stage[0] == ("FROM", "python:3.11-slim")
    assert all(args.startswith("python:3.11-slim") for op, args in dockerfile_instructions() if op == "FROM")
    assert json.loads(instructions["ENTRYPOINT"]) == ["telemetry"]
    assert json.loads(instructions["CMD"]) == ["consume"]
    user = instructions["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert "/healthz" in instructions["HEALTHCHECK"]
    assert f"TELEMETRY_METRICS_PORT={METRICS_PORT}" in instructions["ENV"]
    assert instructions["EXPOSE"] == str(METRICS_PORT)
    assert "[dev]" not in DOCKERFILE.read_text()


def test_dockerignore_sends_the_packages_and_nothing_private() -> None:
    copied = []
    for op, args in dockerfile_instructions():
        if op == "COPY" and not args.startswith("--from"):
            copied.extend(args.split()[:-1])
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), f"{source} is copied but .dockerignore excludes it"
    for kept in ("producers/wire.py", "consumer/core/config.py", "consumer/cli/app.py"):
        assert not dockerignored(kept), kept
    for private in ("deploy/.env", ".git/config", ".venv/bin/python", "tests/conftest.py",
                    "consumer/__pycache__/x.pyc"):
        assert dockerignored(private), private


def test_the_build_context_packages_the_telemetry_command(tmp_path: Path) -> None:
    """What the Dockerfile's `pip install .` gets: exactly the files .dockerignore lets through,
    from which setuptools finds both packages and the `telemetry` console script."""
    context = tmp_path / "context"
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and relative.split("/")[0] not in (".git", ".venv") and not dockerignored(relative):
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / relative)
    assert not (context / "tests").exists() and not (context / "deploy").exists()
    build = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", build, str(tmp_path / "dist")],
                            capture_output=True, text=True, timeout=300, cwd=context)
    assert result.returncode == 0, result.stderr
    archive = tmp_path / "dist" / result.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as sdist:
        names = {PurePosixPath(*PurePosixPath(n).parts[1:]).as_posix() for n in sdist.getnames()}
        entry_points = next(m for m in sdist.getmembers() if m.name.endswith(".egg-info/entry_points.txt"))
        handle = sdist.extractfile(entry_points)
        assert handle is not None
        assert "telemetry = consumer.cli.app:main" in handle.read().decode()
    assert {"consumer/cli/app.py", "consumer/core/config.py", "producers/wire.py",
            "producers/keys.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "deploy/"))]


def test_deploy_doc_gives_the_commands_the_files_run() -> None:
    doc = DEPLOY_DOC.read_text()
    instructions = dict(final_stage())
    command = " ".join(json.loads(instructions["ENTRYPOINT"]) + json.loads(instructions["CMD"]))
    assert command == "telemetry consume"
    assert command in doc
    assert f"docker build -t {IMAGE} ." in doc
    assert "docker compose -f deploy/docker-compose.yml --env-file deploy/.env up -d" in doc
    assert "cp deploy/.env.example deploy/.env" in doc
    assert "kubectl apply -k deploy/k8s" in doc
    assert str(METRICS_PORT) in doc and "/healthz" in doc
    service = unit()["Service"]
    assert service["ExecStart"] in doc
    assert service["EnvironmentFile"] in doc
    assert "systemctl enable --now telemetry-worker" in doc
    for heading in ("## Docker Compose", "## Kubernetes", "## systemd"):
        assert heading in doc, heading
    sections = re.split(r"^## ", doc, flags=re.M)
    for name in ("Docker Compose", "Kubernetes", "systemd"):
        section = next(s for s in sections if s.startswith(name))
        assert "telemetry doctor" in section, f"{name}: how to check it works"
        assert re.search(r"^### Upgrad", section, flags=re.M), f"{name}: how to upgrade"


def test_deploy_doc_names_only_known_variables_and_both_influx_apis() -> None:
    doc = DEPLOY_DOC.read_text()
    mentioned = set(re.findall(r"\bTELEMETRY_[A-Z0-9_]*[A-Z0-9]\b", doc))
    unknown = mentioned - known_variables()
    assert not unknown, f"docs/deploy.md names unknown variables: {sorted(unknown)}"
    for name in ("TELEMETRY_INFLUX_TOKEN", "TELEMETRY_INFLUX_ORG", "TELEMETRY_INFLUX_BUCKET",
                 "TELEMETRY_INFLUX_DB", "TELEMETRY_INFLUX_RP", "TELEMETRY_INFLUX_USER",
                 "TELEMETRY_INFLUX_PASSWORD", "TELEMETRY_INFLUX_API"):
        assert name in mentioned, name
    assert "uid" in doc and "`influxdb`" in doc


# --------------------------------------------------------------------------- the worker as deployed


def image_command() -> list[str]:
    """The image's ENTRYPOINT + CMD, with ``telemetry`` resolved to this environment's script."""
    instructions = dict(final_stage())
    argv = json.loads(instructions["ENTRYPOINT"]) + json.loads(instructions["CMD"])
    return [str(Path(sys.executable).with_name(argv[0])), *argv[1:]]


def image_healthcheck() -> list[str]:
    """The image's HEALTHCHECK command (exec form), ``python`` resolved to this interpreter."""
    healthcheck = dict(final_stage())["HEALTHCHECK"]
    argv = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def worker_env(**settings: str) -> dict[str, str]:
    """This process's environment without any TELEMETRY_* of its own, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TELEMETRY_")}
    return {**env, **settings}


def _healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_image_command_serves_healthz_and_the_healthcheck_follows_it(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, database = influx
    port = free_port()
    env = worker_env(TELEMETRY_REDIS_URL=redis_server.url, TELEMETRY_INFLUX_URL=server.url,
                     TELEMETRY_INFLUX_API="v1", TELEMETRY_INFLUX_DB=database,
                     TELEMETRY_METRICS_PORT=str(port))
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(image_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while _healthz(port) != 200 and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        assert _healthz(port) == 200
        healthy = subprocess.run(image_healthcheck(), env=env, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
        worker.terminate()  # what docker stop, kubelet and systemd send first
        assert worker.wait(timeout=45) == 0, "the worker did not stop cleanly on SIGTERM"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        log.close()
    assert _healthz(port) is None
    unhealthy = subprocess.run(image_healthcheck(), env=env, capture_output=True, timeout=30)
    assert unhealthy.returncode != 0


def test_a_configuration_error_exits_2_which_systemd_does_not_restart() -> None:
    env = worker_env(TELEMETRY_WINDOW="ten seconds", TELEMETRY_METRICS_PORT=str(free_port()))
    result = subprocess.run(image_command(), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "TELEMETRY_WINDOW" in result.stderr
    assert unit()["Service"]["RestartPreventExitStatus"] == str(result.returncode)


def test_metrics_listen_beyond_loopback_only_where_a_scraper_is_outside_the_process() -> None:
    """Containers and pods are scraped and probed from outside: 0.0.0.0; a VM keeps the default."""
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose["services"]["worker"]["environment"]["TELEMETRY_METRICS_HOST"] == "0.0.0.0"
    assert "ports" not in compose["services"]["worker"]  # not published on the host
    configmap = next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / "configmap.yaml").read_text())
                     if d and d.get("kind") == "ConfigMap")
    assert configmap["data"]["TELEMETRY_METRICS_HOST"] == "0.0.0.0"
    assert "TELEMETRY_METRICS_HOST=0.0.0.0" in DOCKERFILE.read_text()
    assert read_env_file(UNIT_ENV)["TELEMETRY_METRICS_HOST"] == "127.0.0.1"
    doc = DEPLOY_DOC.read_text()
    assert "TELEMETRY_METRICS_HOST" in doc and "127.0.0.1" in doc

"""The listener's deploy files (Kubernetes, systemd) agree with ``telemetry listen`` and the worker's.

Checked the way ``tests/test_deploy.py`` checks the worker's: the manifests and the unit parse,
every ``TELEMETRY_*`` name is one the CLI reads and every value parses with its own settings
code, references resolve, no secret is committed; then the command each file runs is started for
real, with the file's settings, against a private Redis, and answers the probes the file uses.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from consumer.cli.listen import LISTEN_VARIABLES, listener_config
from consumer.pipeline.listener import ListenerConfig
from tests.listen_process import http_status, telemetry_script, wait_listening
from tests.services import RedisServer, free_port
from tests.test_deploy import (
    DEPLOY_DOC,
    K8S,
    LISTENER_UNIT,
    LISTENER_UNIT_ENV,
    PLACEHOLDER,
    SECRET_WORDS,
    UNIT,
    UNIT_ENV,
    compose,
    deployment_container,
    environment,
    k8s_documents,
    known_variables,
    read_env_file,
    unit,
)

LISTENER = "telemetry-listener"
STREAM_SETTINGS = ("TELEMETRY_REDIS_URL", "TELEMETRY_STREAM_PREFIX", "TELEMETRY_SHARDS")
PRIVACY_SETTINGS = ("TELEMETRY_PSEUDONYMIZE", "TELEMETRY_PSEUDONYM_KEY")
"""What the listener must share with the workers: the same streams, ids hashed the same way."""
NOT_HARDENING = frozenset({"Type", "User", "Group", "EnvironmentFile", "ExecStart", "KillSignal",
                           "TimeoutStopSec", "Restart", "RestartSec", "RestartPreventExitStatus"})


# --------------------------------------------------------------------------- helpers


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's settings as its process sees them: ConfigMaps, literal values, Secret keys."""
    objects = k8s_documents()
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        env[variable["name"]] = (objects[("Secret", ref["name"])]["stringData"][ref["key"]] if ref
                                 else variable["value"])
    return env


def configured(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> ListenerConfig:
    """What ``telemetry listen`` makes of ``env`` (and nothing else of this process's)."""
    for name in list(os.environ):
        if name.startswith("TELEMETRY_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return listener_config()


def write(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Token {token}"} if token else {}
    request = urllib.request.Request(f"{url}/api/v2/write?org=o&bucket=b", data=b"deploy_check x=1i",
                                     method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def running(argv: list[str], env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` as a child process with only ``env``'s TELEMETRY_* settings; SIGTERMed afterwards."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("TELEMETRY_")}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env={**base, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def served_as_deployed(argv: list[str], env: Mapping[str, str], redis_server: RedisServer,
                       tmp_path: Path) -> dict[str, Any]:
    """Run the listener as a deploy file does, pointed at ``redis_server`` on a free loopback port.

    Returns what a kubelet, a load balancer and a writer would see: the probes with Redis up and
    with Redis down, the answers to writes with and without the token, the exit status on SIGTERM.
    """
    port = free_port()
    settings = {**env, "TELEMETRY_REDIS_URL": redis_server.url, "TELEMETRY_LISTEN_HOST": "127.0.0.1",
                "TELEMETRY_LISTEN_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    seen: dict[str, Any] = {}
    with running(argv, settings, tmp_path / "listener.log") as process:
        assert wait_listening(port, lambda: process.poll() is None), (tmp_path / "listener.log").read_text()
        seen["up"] = {path: http_status(port, path) for path in ("/ping", "/health", "/metrics")}
        token = env.get("TELEMETRY_LISTEN_TOKEN")
        seen["write"] = {"token": write(url, token), "none": write(url, None)}
        redis_server.stop()
        seen["redis_down"] = {path: http_status(port, path) for path in ("/ping", "/health")}
        redis_server.start()
        process.send_signal(signal.SIGTERM)
        seen["sigterm_exit"] = process.wait(30)
    return seen


def assert_serves_as_deployed(seen: Mapping[str, Any]) -> None:
    assert seen["up"] == {"/ping": 204, "/health": 200, "/metrics": 200}
    assert seen["write"] == {"token": 204, "none": 401}
    # liveness (/ping) stays up while Redis is down; readiness (/health) does not
    assert seen["redis_down"] == {"/ping": 204, "/health": 503}
    assert seen["sigterm_exit"] == 0


def resolved(executable: str) -> str:
    """A deploy file's ``.../bin/telemetry`` resolved to this environment's script."""
    assert Path(executable).name == "telemetry", executable
    return telemetry_script()


# --------------------------------------------------------------------------- Kubernetes


def listener_container() -> dict[str, Any]:
    return deployment_container(LISTENER)


def test_k8s_listener_binds_the_pod_ip_needs_a_token_and_probes_its_own_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    container = listener_container()
    assert container["image"] == deployment_container("telemetry-worker")["image"]
    assert container["args"] == ["listen"]
    env = container_env(container)
    config = configured(env, monkeypatch)
    # the Service and the kubelet connect to the pod IP: loopback would refuse both
    assert config.host == "0.0.0.0"
    assert config.token and PLACEHOLDER.match(config.token), "the token comes from the Secret's placeholder"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert set(ports.values()) == {config.port}
    paths = {name: (container[name]["httpGet"]["path"], ports[container[name]["httpGet"]["port"]])
             for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {"startupProbe": ("/ping", config.port), "livenessProbe": ("/ping", config.port),
                     "readinessProbe": ("/health", config.port)}
    annotations = k8s_documents()[("Deployment", LISTENER)]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == config.port


def test_k8s_listener_writes_the_workers_streams_and_sees_only_the_pseudonym_key_of_theirs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listener = container_env(listener_container())
    worker = container_env(deployment_container("telemetry-worker"))
    for name in (*STREAM_SETTINGS, *PRIVACY_SETTINGS):
        assert listener[name] == worker[name], name
    secrets = {v["name"]: v["valueFrom"]["secretKeyRef"]["name"] for v in listener_container()["env"]
               if "valueFrom" in v}
    assert secrets == {"TELEMETRY_LISTEN_TOKEN": "telemetry-listener-secrets",
                       "TELEMETRY_PSEUDONYM_KEY": "telemetry-worker-secrets"}
    # turning pseudonymisation on in the ConfigMap starts a pseudonymising listener, not a crash loop
    on = configured({**listener, "TELEMETRY_PSEUDONYMIZE": "user_id"}, monkeypatch)
    assert on.pseudonymizer() is not None
    objects = k8s_documents()
    listener_secret = objects[("Secret", "telemetry-listener-secrets")]["stringData"]
    assert all(PLACEHOLDER.match(value) for value in listener_secret.values()), "Secret holds a real value"
    assert "TELEMETRY_LISTEN_TOKEN" not in objects[("Secret", "telemetry-worker-secrets")]["stringData"]


def test_k8s_listener_settings_are_variables_the_cli_reads() -> None:
    names = set(container_env(listener_container()))
    assert not names - known_variables(), sorted(names - known_variables())
    assert set(LISTEN_VARIABLES) <= names


def test_k8s_listener_has_limits_security_and_a_rollout_that_keeps_a_listener() -> None:
    container, worker = listener_container(), deployment_container("telemetry-worker")
    for section in ("requests", "limits"):
        assert set(container["resources"][section]) == set(worker["resources"][section]) == {"cpu", "memory"}
    assert container["securityContext"] == worker["securityContext"]
    deployment = k8s_documents()[("Deployment", LISTENER)]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["replicas"] >= 2


def test_k8s_listener_service_routes_to_listener_pods_only() -> None:
    objects = k8s_documents()
    service = objects[("Service", LISTENER)]
    listener_pods = objects[("Deployment", LISTENER)]["spec"]["template"]["metadata"]["labels"]
    worker_pods = objects[("Deployment", "telemetry-worker")]["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= listener_pods.items()
    assert not selector.items() <= worker_pods.items()
    port_names = {port["name"]: port["containerPort"] for port in listener_container()["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names
        assert port["port"] == port_names[port["targetPort"]]


def test_k8s_listener_command_answers_its_probes_for_real(redis_server: RedisServer, tmp_path: Path) -> None:
    container = listener_container()
    argv = [resolved("telemetry"), *container["args"]]
    assert_serves_as_deployed(served_as_deployed(argv, container_env(container), redis_server, tmp_path))


def test_compose_listener_hashes_ids_as_the_worker_does() -> None:
    services = compose()["services"]
    listener, worker = environment(services["listener"]), environment(services["worker"])
    for name in PRIVACY_SETTINGS:
        assert listener[name] == worker[name], name
    assert not set(listener) - known_variables(), sorted(set(listener) - known_variables())


# --------------------------------------------------------------------------- systemd


def test_systemd_listener_unit_runs_telemetry_listen_hardened_like_the_worker() -> None:
    listener, worker = unit(LISTENER_UNIT), unit(UNIT)
    assert listener.sections() == worker.sections() == ["Unit", "Service", "Install"]
    service = listener["Service"]
    assert service["ExecStart"].split()[1:] == ["listen"]
    assert service["ExecStart"].split()[0] == worker["Service"]["ExecStart"].split()[0]
    assert service["EnvironmentFile"] == "/etc/whisperengine-telemetry/listener.env"
    for key in ("User", "Group", "Restart", "KillSignal", "RestartPreventExitStatus"):
        assert service[key] == worker["Service"][key], key
    hardening = {key: value for key, value in worker["Service"].items() if key not in NOT_HARDENING}
    assert len(hardening) >= 20
    assert {key: service.get(key) for key in hardening} == hardening
    assert listener["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in listener["Unit"]["After"]


def test_systemd_listener_environment_is_known_loopback_and_the_workers_streams(
        monkeypatch: pytest.MonkeyPatch) -> None:
    values = read_env_file(LISTENER_UNIT_ENV, commented=True)
    assert not set(values) - known_variables(), sorted(set(values) - known_variables())
    for key, value in values.items():
        if any(word in key for word in SECRET_WORDS):
            assert PLACEHOLDER.match(value), f"{key} holds a value, not a placeholder"
    active = read_env_file(LISTENER_UNIT_ENV)
    worker = read_env_file(UNIT_ENV)
    for name in STREAM_SETTINGS:
        assert active[name] == worker[name], name
    both = read_env_file(UNIT_ENV, commented=True)
    for name in PRIVACY_SETTINGS:
        assert values[name] == both[name], name
    config = configured(active, monkeypatch)
    assert config.host == "127.0.0.1"   # a VM's interfaces may be public: loopback unless told
    assert config.token is not None


def test_systemd_listener_command_answers_as_the_unit_runs_it(redis_server: RedisServer,
                                                               tmp_path: Path) -> None:
    executable, *args = unit(LISTENER_UNIT)["Service"]["ExecStart"].split()
    argv = [resolved(executable), *args]
    env = read_env_file(LISTENER_UNIT_ENV)
    assert_serves_as_deployed(served_as_deployed(argv, env, redis_server, tmp_path))


# --------------------------------------------------------------------------- docs


def test_deploy_doc_shows_how_to_run_and_check_the_listener() -> None:
    doc = DEPLOY_DOC.read_text()
    service = unit(LISTENER_UNIT)["Service"]
    assert service["ExecStart"] in doc and service["EnvironmentFile"] in doc
    assert "systemctl enable --now telemetry-listener" in doc
    assert "deploy/systemd/telemetry-listener.env.example" in doc
    assert f"rollout status deployment/{LISTENER}" in doc
    for path in sorted(K8S.glob("listener*.yaml")):
        assert f"`{path.name}`" in doc, path.name
    kubernetes = next(s for s in re.split(r"^## ", doc, flags=re.M) if s.startswith("Kubernetes"))
    assert "TELEMETRY_LISTEN_HOST" in kubernetes and "telemetry-listener-secrets" in kubernetes

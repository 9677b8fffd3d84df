"""WorkerConfig: every TELEMETRY_* variable, clear errors naming the variable, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.core.config import WorkerConfig, flag_name, parse_flags, variable_name
from producers.durations import ConfigError

FULL_ENV = {
    "TELEMETRY_REDIS_URL": "redis://:hunter2@redis:6380/1",
    "TELEMETRY_STREAM_PREFIX": "tp",
    "TELEMETRY_SHARDS": "8",
    "TELEMETRY_GROUP": "agg2",
    "TELEMETRY_STREAM_MAXLEN": "1_000",
    "TELEMETRY_WINDOW": "500ms",
    "TELEMETRY_GRACE": "3s",
    "TELEMETRY_ALLOWED_LATENESS": "2m",
    "TELEMETRY_MAX_FUTURE": "1h",
    "TELEMETRY_INFLUX_URL": "http://influx:8086",
    "TELEMETRY_INFLUX_API": "V1",
    "TELEMETRY_INFLUX_TOKEN": "tok-secret",
    "TELEMETRY_INFLUX_ORG": "org1",
    "TELEMETRY_INFLUX_BUCKET": "bucket1",
    "TELEMETRY_INFLUX_DB": "db1",
    "TELEMETRY_INFLUX_RP": "weekly",
    "TELEMETRY_INFLUX_USER": "bob",
    "TELEMETRY_INFLUX_PASSWORD": "pw-secret",
    "TELEMETRY_MAX_SERIES": "50",
    "TELEMETRY_METRICS_PORT": "9108",
    "TELEMETRY_PSEUDONYMIZE": "user_id, session_id",
    "TELEMETRY_PSEUDONYM_KEY": "key-secret",
    "TELEMETRY_CONSUMER": "worker-a",
    "TELEMETRY_READ_COUNT": "100",
    "TELEMETRY_BLOCK_MS": "250",
    "TELEMETRY_LEASE": "15s",
    "TELEMETRY_MAX_OPEN_SERIES": "5000",
    "TELEMETRY_CHECKPOINT_INTERVAL": "2s",
    "TELEMETRY_DEDUPE_TTL": "1h",
}


def test_every_variable_is_read() -> None:
    config = WorkerConfig.from_env(FULL_ENV)
    assert config == WorkerConfig(
        redis_url="redis://:hunter2@redis:6380/1", stream_prefix="tp", shards=8, group="agg2",
        stream_maxlen=1000, window_s=0.5, grace_s=3.0, allowed_lateness_s=120.0, max_future_s=3600.0,
        influx_url="http://influx:8086", influx_api="v1", influx_token="tok-secret", influx_org="org1",
        influx_bucket="bucket1", influx_db="db1", influx_rp="weekly", influx_user="bob",
        influx_password="pw-secret", max_series=50, metrics_port=9108, pseudonymize=("user_id", "session_id"),
        pseudonym_key="key-secret", consumer="worker-a", read_count=100, block_ms=250, lease_s=15.0,
        max_open_series=5000, checkpoint_interval_s=2.0, dedupe_ttl_s=3600.0)


def test_defaults_follow_the_design() -> None:
    config = WorkerConfig.from_env({})
    assert (config.redis_url, config.stream_prefix, config.shards, config.group, config.stream_maxlen) == (
        "redis://localhost:6379/0", "telemetry", 4, "aggregator", 10_000_000)
    timing = (config.window_s, config.grace_s, config.allowed_lateness_s, config.max_future_s)
    assert timing == (10, 2, 300, 60)
    assert (config.influx_api, config.influx_org, config.influx_bucket, config.influx_db) == (
        "v2", "whisperengine", "whisperengine", "whisperengine")
    assert (config.metrics_port, config.pseudonymize, config.max_series) == (None, (), 10_000)
    assert WorkerConfig.from_env({"TELEMETRY_INFLUX_BUCKET": "b"}).influx_db == "b"


@pytest.mark.parametrize(("variable", "value"), [
    ("TELEMETRY_WINDOW", "ten"), ("TELEMETRY_WINDOW", "0s"), ("TELEMETRY_GRACE", "2 weeks"),
    ("TELEMETRY_SHARDS", "0"), ("TELEMETRY_SHARDS", "four"), ("TELEMETRY_INFLUX_API", "v3"),
    ("TELEMETRY_METRICS_PORT", "70000"), ("TELEMETRY_LEASE", "-1s"), ("TELEMETRY_MAX_SERIES", "1.5"),
])
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        WorkerConfig.from_env({variable: value})


def test_pseudonymize_needs_a_key_from_env_or_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TELEMETRY_PSEUDONYM_KEY"):
        WorkerConfig.from_env({"TELEMETRY_PSEUDONYMIZE": "user_id"})
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    env = {"TELEMETRY_PSEUDONYMIZE": "user_id", "TELEMETRY_PSEUDONYM_KEY_FILE": str(secret)}
    config = WorkerConfig.from_env(env)
    assert config.pseudonym_key == "from-file"


def test_secrets_never_show() -> None:
    config = WorkerConfig.from_env(FULL_ENV)
    for text in (repr(config), str(config.describe())):
        for secret in ("tok-secret", "pw-secret", "key-secret", "hunter2"):
            assert secret not in text
    assert config.describe()["influx_token"] == "****"
    assert config.describe()["redis_url"] == "redis://:****@redis:6380/1"


def test_flags_override_and_are_parsed_like_variables() -> None:
    assert variable_name("window_s") == "TELEMETRY_WINDOW"
    assert flag_name("redis_url") == "--redis-url"
    flags = parse_flags(["--redis-url", "redis://other:1/0", "--window=5s", "--drain", "--shards", "2"])
    config = WorkerConfig.from_env({}).with_overrides(**flags, influx_url=None)
    got = (config.redis_url, config.window_s, config.drain, config.shards)
    assert got == ("redis://other:1/0", 5.0, True, 2)
    assert config.influx_url == "http://localhost:8086"
    with pytest.raises(ConfigError, match="--window"):
        WorkerConfig.from_env({}).with_overrides(**parse_flags(["--window", "soon"]))
    with pytest.raises(ConfigError, match="--no-such"):
        parse_flags(["--no-such", "1"])


def test_the_worker_process_tunes_the_collector_and_an_embedding_one_keeps_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from consumer.pipeline import worker as worker_module

    seen: list[tuple[tuple[int, ...], int]] = []

    class Running:
        """Stands in for Worker: records the collector's settings the loop would run with."""

        def __init__(self, config: WorkerConfig) -> None:
            assert gc.get_threshold() != worker_module.COLLECTOR_THRESHOLDS  # built before the tuning

        def run(self) -> int:
            seen.append((gc.get_threshold(), gc.get_freeze_count()))
            return 7

    before = gc.get_threshold()
    worker_module.Worker(WorkerConfig(influx_url="memory://"))  # embedding: nothing changes
    assert gc.get_threshold() == before
    monkeypatch.setattr(worker_module, "Worker", Running)
    try:
        assert worker_module.run_worker(WorkerConfig(influx_url="memory://")) == 7
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    [(threshold, frozen)] = seen
    assert threshold == worker_module.COLLECTOR_THRESHOLDS
    assert frozen > 0

"""ProducerConfig: defaults, environment, and one clear ConfigError per bad value."""

from __future__ import annotations

import dataclasses

import pytest

from producers import ConfigError, ProducerConfig, Telemetry
from producers.config import (
    DEFAULT_BUFFER_EVENTS,
    DEFAULT_PREFIX,
    DEFAULT_REDIS_URL,
    DEFAULT_SHARDS,
    DEFAULT_STREAM_MAXLEN,
)


def test_defaults_match_the_design() -> None:
    config = ProducerConfig.from_env({})
    assert (config.redis_url, config.prefix, config.shards, config.stream_maxlen, config.buffer_events) == (
        DEFAULT_REDIS_URL, DEFAULT_PREFIX, DEFAULT_SHARDS, DEFAULT_STREAM_MAXLEN, DEFAULT_BUFFER_EVENTS)
    defaults = (DEFAULT_REDIS_URL, DEFAULT_PREFIX, DEFAULT_SHARDS, DEFAULT_STREAM_MAXLEN,
                DEFAULT_BUFFER_EVENTS)
    assert defaults == ("redis://localhost:6379/0", "telemetry", 4, 10_000_000, 100_000)
    assert config.is_cluster is False


def test_environment_is_read() -> None:
    env = {"TELEMETRY_REDIS_URL": "redis+cluster://node:7000", "TELEMETRY_STREAM_PREFIX": "bots",
           "TELEMETRY_SHARDS": "16", "TELEMETRY_STREAM_MAXLEN": "1_000", "TELEMETRY_BUFFER_EVENTS": "500"}
    config = ProducerConfig.from_env(env)
    assert dataclasses.asdict(config) == {
        "redis_url": "redis+cluster://node:7000", "prefix": "bots", "shards": 16, "stream_maxlen": 1000,
        "buffer_events": 500, "flush_interval_ms": 100, "batch_max_events": 2000, "exit_timeout_ms": 2000,
        "pseudonymize": (), "pseudonym_key": None}
    assert config.is_cluster is True


def test_config_is_frozen_and_keyword_only() -> None:
    config = ProducerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.shards = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        ProducerConfig("redis://x")  # type: ignore[misc]


@pytest.mark.parametrize(("variable", "value"), [
    ("TELEMETRY_SHARDS", "four"),
    ("TELEMETRY_SHARDS", "0"),
    ("TELEMETRY_STREAM_MAXLEN", "-5"),
    ("TELEMETRY_STREAM_MAXLEN", "1e6"),
    ("TELEMETRY_BUFFER_EVENTS", "lots"),
    ("TELEMETRY_BUFFER_EVENTS", "0"),
    ("TELEMETRY_REDIS_URL", "localhost:6379"),
    ("TELEMETRY_REDIS_URL", "http://localhost:6379"),
    ("TELEMETRY_STREAM_PREFIX", "a{b}"),
    ("TELEMETRY_STREAM_PREFIX", "has space"),
])
def test_bad_environment_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Telemetry.from_env({variable: value})
    message = str(caught.value)
    assert variable in message and repr(value) in message
    assert "\n" not in message


@pytest.mark.parametrize("settings", [
    {"shards": 0}, {"buffer_events": -1}, {"flush_interval_ms": 0}, {"batch_max_events": 0},
    {"shards": "4"}, {"shards": True}, {"redis_url": ""}, {"prefix": ""},
])
def test_bad_constructor_settings_raise_config_error(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Telemetry(**settings)  # type: ignore[arg-type]

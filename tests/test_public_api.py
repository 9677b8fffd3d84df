"""The declared public surface of the producer library, pinned: changing it is a decision."""

from __future__ import annotations

import inspect

import producers


def test_all_is_pinned() -> None:
    assert producers.__all__ == [
        "BoundTelemetry",
        "ConfigError",
        "ProducerConfig",
        "Telemetry",
        "Timer",
        "close",
        "configure",
        "count",
        "current",
        "emit",
        "flush",
        "gauge",
        "observe",
        "stats",
        "timer",
    ]
    for name in producers.__all__:
        assert getattr(producers, name) is not None


def test_signatures_are_pinned() -> None:
    def params(func: object) -> list[str]:
        return [str(p) for p in inspect.signature(func).parameters.values()]  # type: ignore[arg-type]

    tel = producers.Telemetry
    init = inspect.signature(tel.__init__).parameters
    assert [(name, p.kind.name, p.default) for name, p in init.items()][1:] == [
        (name, "KEYWORD_ONLY", None) for name in (
            "redis_url", "prefix", "shards", "buffer_events", "stream_maxlen", "flush_interval_ms",
            "batch_max_events", "client", "config")]
    assert [p.split(":")[0] for p in params(tel.emit)] == ["self", "measurement", "fields", "tags", "ts"]
    for method in (tel.gauge, tel.observe):
        names = [p.split(":")[0] for p in params(method)]
        assert names == ["self", "measurement", "field", "value", "tags", "ts"]
    assert params(tel.count)[3] == "value: 'int' = 1"
    assert [p.split(":")[0] for p in params(tel.timer)] == ["self", "measurement", "field", "tags"]
    assert params(tel.flush) == ["self", "timeout: 'float' = 5.0"]
    assert params(tel.close) == ["self", "timeout: 'float' = 5.0"]
    assert [p.split(":")[0] for p in params(tel.bind)] == ["self", "measurement", "**tags"]
    bound = producers.BoundTelemetry
    assert [p.split(":")[0] for p in params(bound.emit)] == ["self", "fields", "tags", "ts"]
    assert [p.split(":")[0] for p in params(producers.emit)] == ["measurement", "fields", "tags", "ts"]
    assert sorted(producers.ProducerConfig.__dataclass_fields__) == [
        "batch_max_events", "buffer_events", "exit_timeout_ms", "flush_interval_ms", "prefix",
        "pseudonym_key", "pseudonymize", "redis_url", "shards", "stream_maxlen"]


def test_producers_never_imports_consumer() -> None:
    import pathlib

    root = pathlib.Path(producers.__file__).parent
    offenders = [p.name for p in root.glob("*.py") if "import consumer" in p.read_text()
                 or "from consumer" in p.read_text()]
    assert offenders == []

"""Dead letters with pseudonymisation on (pseudonymised, details without raw values), their
retention, and where ``/metrics`` listens."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import msgpack
import pytest

from consumer.aggregation.privacy import Pseudonymizer
from consumer.core.config import DEFAULT_DLQ_RETENTION_S, WorkerConfig
from consumer.core.metrics import Metrics
from consumer.pipeline.worker import Worker
from consumer.sinks import MemorySink
from producers.durations import ConfigError
from producers.keys import dlq_key, stream_key
from producers.pseudonyms import REDACTED, WITHHELD
from producers.wire import encode_entry
from tests.services import RedisServer, free_port
from tests.test_worker import PREFIX, Producer, _config, _now_based

KEY = "dead-letter-key"
RAW = "raw-user-9931"


def _letters(server: RedisServer) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in server.client().xrange(dlq_key(PREFIX))]


def test_rejected_events_are_dead_lettered_as_pseudonymised_with_details_naming_only_the_tag(
        redis_server: RedisServer) -> None:
    t0 = _now_based(0)
    bad_value = f"{RAW}\nsecond line"
    Producer(redis_server.client(), shards=1).send([
        (0, "m", t0, {"user_id": RAW}, {"x": float("nan")}),          # invalid_value
        (0, "m", t0, {"user_id": 4711, "bot_name": "elena"}, {"x": 1.0}),  # not a string: invalid_name
        (0, "m", t0, {"user_id": bad_value}, {"x": 2.0}),             # pseudonymised, so storable
        (0, "m", t0 + 7200, {"user_id": RAW}, {"x": 1.0}),             # from_future
    ])
    sink = MemorySink()
    Worker(_config(redis_server, shards=1, pseudonymize=("user_id",), pseudonym_key=KEY), sink=sink).run()
    letters = _letters(redis_server)
    assert [f[b"reason"] for f in letters] == [b"invalid_value", b"invalid_name", b"from_future"]
    pseudonymizer = Pseudonymizer(("user_id",), KEY.encode())
    events = [msgpack.unpackb(f[b"payload"]) for f in letters]
    assert [e[3] for e in events] == [{"user_id": pseudonymizer.pseudonym(RAW)},
                                      {"user_id": {REDACTED: "int"}, "bot_name": "elena"},
                                      {"user_id": pseudonymizer.pseudonym(RAW)}]
    assert letters[1][b"detail"] == b"value of tag 'user_id' is dict, not a string"
    everything = repr(letters).encode()
    assert RAW.encode() not in everything and b"4711" not in everything
    [point] = sink.points("m")
    assert dict(point.tags) == {"user_id": pseudonymizer.pseudonym(bad_value)}


def test_an_undecodable_entry_keeps_no_events_while_pseudonymisation_is_on(redis_server: RedisServer) -> None:
    client = redis_server.client()
    corrupt = msgpack.packb([[0, "m", _now_based(0), {"user_id": RAW}, {"x": 1.0}]])[:-3]
    client.xadd(stream_key(PREFIX, 0), encode_entry("a1b2c3d4e5f60718", 1, corrupt, 1))  # type: ignore[arg-type]
    Worker(_config(redis_server, shards=1, pseudonymize=("user_id",), pseudonym_key=KEY),
           sink=MemorySink()).run()
    [letter] = _letters(redis_server)
    assert letter[b"reason"] == b"undecodable"
    kept = msgpack.unpackb(letter[b"payload"], raw=True)
    assert kept[b"p"] == b"a1b2c3d4e5f60718" and kept[b"n"] == b"1"
    assert kept[b"d"] == f"<{len(corrupt)} bytes withheld: pseudonymisation is on>".encode()
    assert RAW.encode() not in letter[b"payload"]


def test_without_pseudonymisation_an_undecodable_entry_is_kept_whole(redis_server: RedisServer) -> None:
    client = redis_server.client()
    corrupt = msgpack.packb([[0, "m", _now_based(0), {"user_id": RAW}, {"x": 1.0}]])[:-3]
    client.xadd(stream_key(PREFIX, 0), encode_entry("a1b2c3d4e5f60718", 1, corrupt, 1))  # type: ignore[arg-type]
    Worker(_config(redis_server, shards=1), sink=MemorySink()).run()
    [letter] = _letters(redis_server)
    assert msgpack.unpackb(letter[b"payload"], raw=True)[b"d"] == corrupt


def test_a_rejected_line_is_withheld_when_it_names_a_pseudonymised_tag() -> None:
    event = [5, "", 1, {"reason": "unparsable_line", "detail": f"line 2: invalid tag 'user_id={RAW}'"},
             {"line": f"m,user_id={RAW}"}]
    got = Pseudonymizer(("user_id",), KEY.encode()).wire_event(event)
    assert got[3]["detail"] == f"line 2: {WITHHELD}" and got[4] == {"line": WITHHELD}


def _old_letters(server: RedisServer, ages_s: list[float]) -> list[str]:
    client = server.client()
    now_ms = int(client.time()[0]) * 1000
    ids = []
    for age_s in sorted(ages_s, reverse=True):
        ids.append(client.xadd(dlq_key(PREFIX), {"reason": "too_late", "payload": b"\x90"},
                               id=f"{now_ms - int(age_s * 1000)}-0").decode())
    return ids


@pytest.mark.parametrize(("retention", "kept_ages"), [(None, [6 * 86_400.0, 60.0]), ("1h", [60.0])])
def test_the_worker_trims_dead_letters_past_their_retention(redis_server: RedisServer, retention: str | None,
                                                           kept_ages: list[float]) -> None:
    ages = [8 * 86_400.0, 6 * 86_400.0, 60.0]
    ids = dict(zip(sorted(ages, reverse=True), _old_letters(redis_server, ages), strict=True))
    Producer(redis_server.client(), shards=1).send([(0, "m", _now_based(0), {}, {"x": 1.0})])
    env = {} if retention is None else {"TELEMETRY_DLQ_RETENTION": retention}
    config: Any = _config(redis_server, shards=1, dlq_retention_s=WorkerConfig.from_env(env).dlq_retention_s)
    Worker(config, sink=MemorySink()).run()
    remaining = [entry_id.decode() for entry_id, _ in redis_server.client().xrange(dlq_key(PREFIX))]
    assert remaining == [ids[age] for age in sorted(kept_ages, reverse=True)]


def test_retention_defaults_to_seven_days_and_must_be_a_positive_duration() -> None:
    assert WorkerConfig().dlq_retention_s == DEFAULT_DLQ_RETENTION_S == 7 * 86_400
    assert WorkerConfig.from_env({"TELEMETRY_DLQ_RETENTION": "36h"}).dlq_retention_s == 36 * 3600
    for bad in ("0s", "soon"):
        with pytest.raises(ConfigError, match="TELEMETRY_DLQ_RETENTION"):
            WorkerConfig.from_env({"TELEMETRY_DLQ_RETENTION": bad})


def _addresses() -> list[str]:
    """This host's non-loopback IPv4 addresses (empty when it has none)."""
    found = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: picks the outgoing interface
            found.add(probe.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in found if not a.startswith("127."))


def test_metrics_listen_on_loopback_unless_a_host_is_given() -> None:
    assert WorkerConfig().metrics_host == "127.0.0.1"
    assert WorkerConfig.from_env({"TELEMETRY_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"
    with pytest.raises(ConfigError, match="TELEMETRY_METRICS_HOST"):
        WorkerConfig.from_env({"TELEMETRY_METRICS_HOST": "http://x/"})
    metrics = Metrics()
    metrics.beat()
    port = free_port()
    server = metrics.serve(port)
    try:
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            assert reply.status == 200
        for address in _addresses():
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=2).close()
    finally:
        server.shutdown()
        server.server_close()


def test_the_worker_serves_metrics_on_the_configured_host(redis_server: RedisServer) -> None:
    port = free_port()
    seen: list[tuple[int, str]] = []
    original = Metrics.serve

    def spy(self: Metrics, port_: int, host: str = "127.0.0.1") -> Any:
        seen.append((port_, host))
        return original(self, port_, host)

    Producer(redis_server.client(), shards=1).send([(0, "m", _now_based(0), {}, {"x": 1.0})])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Metrics, "serve", spy)
        Worker(_config(redis_server, shards=1, metrics_port=port, metrics_host="0.0.0.0"),
               sink=MemorySink()).run()
    assert seen == [(port, "0.0.0.0")]


def test_tail_shows_pseudonyms_and_its_tag_filter_takes_the_raw_id() -> None:
    from consumer.admin.stream_admin import StreamEntry
    from consumer.cli.tail import TailFilter, decode_events
    from producers.wire import encode_events

    events = [(0, "m", 1.0, {"user_id": RAW}, {"x": 1.0}), (0, "m", 1.0, {"user_id": "someone"}, {"x": 1.0})]
    entry = StreamEntry("1-0", encode_entry("a1b2c3d4e5f60718", 1, encode_events(events), 2))
    pseudonymizer = Pseudonymizer(("user_id",), KEY.encode())
    wanted = TailFilter("m", pseudonymizer.tags({"user_id": RAW}))
    shown = list(decode_events("s", entry, wanted, pseudonymizer))
    assert [e["tags"] for e in shown] == [{"user_id": pseudonymizer.pseudonym(RAW)}]
    assert RAW not in repr(shown)
    assert next(e["tags"] for e in decode_events("s", entry, TailFilter(), None)) == {"user_id": RAW}

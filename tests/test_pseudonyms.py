"""One pseudonym function for producer and worker: same output, never twice, raw values never kept."""

from __future__ import annotations

import hashlib
import hmac
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import msgpack
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.aggregation import privacy
from producers import ProducerConfig, Telemetry, pseudonyms
from producers._encode import BatchEncoder
from producers.durations import ConfigError
from producers.pseudonyms import REDACTED, WITHHELD, Pseudonymizer, is_pseudonym, pseudonym
from tests.services import RedisServer
from tests.test_producer_support import read_events

KEY = b"k-for-pseudonym-tests"
RAW = "u-raw-4711"


def _expected(value: str, key: bytes = KEY) -> str:
    return "p_" + hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


def test_the_worker_uses_the_producers_implementation() -> None:
    assert issubclass(privacy.Pseudonymizer, pseudonyms.Pseudonymizer)
    assert privacy.Pseudonymizer.pseudonym is pseudonyms.Pseudonymizer.pseudonym
    assert privacy.Pseudonymizer.wire_event is pseudonyms.Pseudonymizer.wire_event


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1))
def test_producer_and_worker_give_the_same_pseudonym_for_any_text(value: str) -> None:
    worker, producer = privacy.Pseudonymizer(("user_id",), KEY), ProducerConfig(
        pseudonymize=("user_id",), pseudonym_key=KEY.decode()).pseudonymizer()
    assert producer is not None
    want = value if is_pseudonym(value) else _expected(value)
    assert producer.pseudonym(value) == worker.pseudonym(value) == pseudonym(KEY, value) == want


def test_what_the_producer_sends_is_what_the_worker_would_make_of_the_raw_event() -> None:
    raw = [(0, "attachment_monitoring", 1_700_000_000.0, {"user_id": RAW, "bot_name": "elena"}, {"x": 0.5}),
           (1, "m", 1_700_000_001.0, {"user_id": "ユーザー", "session": "s1"}, {"n": 3}),
           (0, "m", 1_700_000_002.0, {"bot_name": "elena"}, {"x": 1.0}),
           (0, "m", 1_700_000_003.0, {"user_id": 42}, {"x": 1.0})]
    encoder = BatchEncoder(1, Pseudonymizer(("user_id", "session"), KEY))
    entries, errors = encoder.encode(raw)
    assert errors == 0
    sent = msgpack.unpackb(entries[0][1], raw=False)
    worker = privacy.Pseudonymizer(("user_id", "session"), KEY)
    assert sent == [worker.wire_event(list(event)) for event in raw]
    assert sent[0][3] == {"user_id": _expected(RAW), "bot_name": "elena"}
    assert sent[3][3] == {"user_id": {REDACTED: "int"}}
    assert raw[0][3]["user_id"] == RAW  # the caller's dicts are not modified


def test_a_pseudonym_is_never_pseudonymised_again() -> None:
    one = Pseudonymizer(("user_id",), KEY)
    event = [0, "m", 1.0, {"user_id": RAW}, {"x": 1}]
    once = one.wire_event(event)
    assert once[3]["user_id"] == _expected(RAW)
    assert one.wire_event(once) is once
    assert Pseudonymizer(("user_id",), b"another key").wire_event(once) is once
    marker = one.wire_event([0, "m", 1.0, {"user_id": [1, 2]}, {}])
    assert marker[3] == {"user_id": {REDACTED: "list"}} and one.wire_event(marker) is marker


def test_values_that_cannot_be_hashed_alike_leave_nothing_raw() -> None:
    one = Pseudonymizer(("user_id",), KEY)
    assert one.wire_event([0, "m", 1.0, {"user_id": ""}, {}])[3] == {"user_id": ""}
    assert one.wire_event([0, "m", 1.0, ["user_id", RAW], {}])[3] is None
    assert one.wire_event((0, "m", 1.0, {"user_id": 4711}, {}))[3] == {"user_id": {REDACTED: "int"}}
    assert one.wire_event("not an event") == "not an event"
    untouched = [0, "m", 1.0, {"bot_name": "elena"}, {"x": 1}]
    assert one.wire_event(untouched) is untouched


def test_a_rejected_line_that_may_hold_a_raw_value_is_withheld() -> None:
    one = Pseudonymizer(("user_id",), KEY)
    bad = [5, "", 1, {"reason": "unparsable_line", "detail": f"line 3: invalid tag 'user_id={RAW}'"},
           {"line": f"m,user_id={RAW} x="}]
    got = one.wire_event(bad)
    withheld = {"reason": "unparsable_line", "detail": f"line 3: {WITHHELD}"}
    assert got == [5, "", 1, withheld, {"line": WITHHELD}]
    assert RAW not in repr(got)
    harmless = [5, "", 1, {"reason": "unparsable_line", "detail": "line 1: missing measurement"},
                {"line": " x=1"}]
    assert one.wire_event(harmless) is harmless


def test_the_shard_is_chosen_from_the_tags_as_given() -> None:
    events = [(0, "m", 1.0, {"user_id": f"u{i}", "bot_name": "elena"}, {"x": 1.0}) for i in range(200)]
    plain = BatchEncoder(8).encode(events)[0]
    private = BatchEncoder(8, Pseudonymizer(("user_id",), KEY)).encode(events)[0]
    assert [(shard, count) for shard, _, count in plain] == [(shard, count) for shard, _, count in private]
    worker = Pseudonymizer(("user_id",), KEY)
    for (_, payload, _), (_, private_payload, _) in zip(plain, private, strict=True):
        assert [worker.wire_event(e) for e in msgpack.unpackb(payload)] == msgpack.unpackb(private_payload)


def test_producer_config_reads_the_same_variables_as_the_worker(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    config = ProducerConfig.from_env({"TELEMETRY_PSEUDONYMIZE": "user_id, session_id",
                                      "TELEMETRY_PSEUDONYM_KEY_FILE": str(key_file)})
    assert (config.pseudonymize, config.pseudonym_key) == (("user_id", "session_id"), "from-file")
    assert "from-file" not in repr(config)
    assert ProducerConfig.from_env({}).pseudonymizer() is None
    with pytest.raises(ConfigError, match="TELEMETRY_PSEUDONYM_KEY"):
        ProducerConfig.from_env({"TELEMETRY_PSEUDONYMIZE": "user_id"})


def test_the_producer_pseudonymises_on_its_flusher_thread_only(redis_server: RedisServer) -> None:
    threads: list[str] = []
    original = Pseudonymizer.wire_event

    def spy(self: Pseudonymizer, event: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(self, event)

    config = ProducerConfig(redis_url=redis_server.url, shards=2, pseudonymize=("user_id",),
                            pseudonym_key=KEY.decode())
    with mock.patch.object(Pseudonymizer, "wire_event", spy):
        tel = Telemetry(config=config)
        bound = tel.bind("attachment_monitoring", user_id=RAW)
        for i in range(500):
            tel.emit("attachment_monitoring", {"x": float(i)}, tags={"user_id": RAW, "bot_name": "elena"})
            bound.count("n")
        assert tel.flush(10.0)
        tel.close()
    assert threads and threading.main_thread().name not in threads
    client = redis.Redis.from_url(redis_server.url)
    events = read_events(client, shards=2)
    assert len(events) == 1000
    assert {e[3]["user_id"] for e in events} == {_expected(RAW)}
    dumped = b"".join(client.dump(key) or b"" for key in client.scan_iter())
    assert RAW.encode() not in dumped

"""Pseudonymisation: keyed, deterministic, only the configured tags, and the key never shows."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re

import pytest

from consumer.aggregation.privacy import Pseudonymizer
from consumer.core.model import Event, Position

KEY = b"s3cret-key-for-tests"


def _event(tags: dict[str, str]) -> Event:
    return Event(0, "attachment_monitoring", 1_700_000_000.0, tags, {"emotional_intensity": 0.5},
                 Position(1, 0, 0))


def test_configured_tags_get_the_truncated_hmac_and_others_are_untouched() -> None:
    event = _event({"user_id": "u42", "bot_name": "elena", "risk_level": "HIGH"})
    result = Pseudonymizer(("user_id",), KEY).apply(event)
    expected = "p_" + hmac.new(KEY, b"u42", hashlib.sha256).hexdigest()[:16]
    assert result == Event(event.kind, event.measurement, event.ts,
                           {"user_id": expected, "bot_name": "elena", "risk_level": "HIGH"},
                           event.fields, event.position)
    assert re.fullmatch(r"p_[0-9a-f]{16}", result.tags["user_id"])
    assert event.tags["user_id"] == "u42"  # the input event is not modified


def test_pseudonyms_are_deterministic_per_key_and_distinct_per_value() -> None:
    one, same, other_key = Pseudonymizer(("user_id",), KEY), Pseudonymizer(("user_id",), KEY), \
        Pseudonymizer(("user_id",), b"another key")
    assert one.pseudonym("u1") == same.pseudonym("u1") == one.pseudonym("u1")
    assert one.pseudonym("u1") != one.pseudonym("u2")
    assert one.pseudonym("u1") != other_key.pseudonym("u1")
    assert len({one.pseudonym(f"u{i}") for i in range(10_000)}) == 10_000


def test_several_tag_keys_and_unicode_values() -> None:
    pseudonymizer = Pseudonymizer(("user_id", "channel"), KEY)
    user = "ユーザー 1"
    result = pseudonymizer.apply(_event({"user_id": user, "channel": "#general", "bot_name": "elena"}))
    assert result.tags["bot_name"] == "elena"
    assert result.tags["user_id"] == "p_" + hmac.new(KEY, user.encode(), hashlib.sha256).hexdigest()[:16]
    assert result.tags["channel"].startswith("p_") and result.tags["channel"] != result.tags["user_id"]


def test_event_without_configured_tags_passes_through_unchanged() -> None:
    event = _event({"bot_name": "elena"})
    assert Pseudonymizer(("user_id",), KEY).apply(event) is event


def test_the_key_never_appears_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pseudonymizer = Pseudonymizer(("user_id",), KEY)
    for i in range(200_001):  # past the cache bound as well
        pseudonymizer.pseudonym(f"u{i}")
    text = repr(pseudonymizer) + str(pseudonymizer) + caplog.text
    assert KEY.decode() not in text and "****" in repr(pseudonymizer)
    assert pseudonymizer.pseudonym("u1") == "p_" + hmac.new(KEY, b"u1", hashlib.sha256).hexdigest()[:16]


def test_a_key_is_required_when_tags_are_configured() -> None:
    with pytest.raises(ValueError, match="key"):
        Pseudonymizer(("user_id",), b"")

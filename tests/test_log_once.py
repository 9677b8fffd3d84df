"""LogOnce: a lasting condition is logged when it starts, not on every retry, and again after it ended."""

from __future__ import annotations

import logging

import pytest

from consumer.core.log_once import LogOnce


def test_a_condition_is_logged_once_until_it_is_over(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.log_once")
    outages = LogOnce(logger)
    with caplog.at_level(logging.WARNING, logger="test.log_once"):
        for attempt in range(3):
            outages.once("sink", logging.WARNING, "sink down (attempt %d)", attempt)
        outages.once("redis", logging.ERROR, "redis down")
        assert outages.over("sink") is True
        assert outages.over("sink") is False          # already over: nothing to announce
        outages.once("sink", logging.WARNING, "sink down again")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "sink down (attempt 0)"), (logging.ERROR, "redis down"),
        (logging.WARNING, "sink down again")]

"""Checkpointing an owned shard, and the stream upkeep that follows a checkpoint.

A checkpoint appends the shard's pending dead letters (idempotent on their source position),
then stores what changed in the window and dedupe state since the previous checkpoint (all of
it the first time, and after a save whose outcome is unknown), the last applied entry id and the
acknowledgements in one fenced Lua call (:mod:`consumer.core.checkpoint`): refused when our lease is
gone, in which case the shard is dropped (``lose``) and the new owner's state stands. After it:
the stream is trimmed below what the group still needs, dead-letter positions older than any
re-read are forgotten, and every few seconds the shard is checked for entries the length cap
removed unread (data lost: logged once, counted in ``lost_entries``), its lag, and idle
consumers of dead workers; every minute dead letters older than ``TELEMETRY_DLQ_RETENTION`` are trimmed.

Usage::

    checkpoints = Checkpoints(config, source, store, letters, stats, lose=ownership.lose)
    checkpoints.save(state)               # trim=False at a handover or shutdown
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from consumer.core.checkpoint import CheckpointStore, StateWrite
from consumer.core.config import WorkerConfig
from consumer.core.errors import Fenced
from consumer.core.log_once import LogOnce
from consumer.core.selftelemetry import SelfTelemetry
from consumer.dlq.deadletter import DeadLetterWriter
from consumer.pipeline.ownership import ShardState
from consumer.pipeline.source import StreamSource, parse_id

logger = logging.getLogger(__name__)

HEALTH_CHECK_EVERY_S: Final = 5.0
DLQ_TRIM_EVERY_S: Final = 60.0
"""How often a worker trims dead letters past their retention (any worker may: it is idempotent)."""


class Checkpoints:
    """Fenced checkpoints of owned shards and the upkeep after each."""

    def __init__(self, config: WorkerConfig, source: StreamSource, store: CheckpointStore,
                 letters: DeadLetterWriter, stats: SelfTelemetry, *,
                 lose: Callable[[ShardState], None]) -> None:
        self.config = config
        self.source = source
        self.store = store
        self.letters = letters
        self.stats = stats
        self._lose = lose
        self._losses = LogOnce(logger)
        self._dlq_trimmed_at = -DLQ_TRIM_EVERY_S

    def save(self, state: ShardState, *, trim: bool = True) -> None:
        """Dead letters, then the fenced atomic checkpoint, then trimming and loss detection."""
        shard = state.shard
        self.letters.append(shard, state.letters)
        state.letters = []
        state.dedupe.expire()
        full = state.full_checkpoint
        windows = state.windows.checkpoint(full=full)
        dedupe_fields, dedupe_deleted = state.dedupe.changes(full=full)
        write = StateWrite({**windows.fields, **dedupe_fields}, windows.deleted + dedupe_deleted, full)
        state.full_checkpoint = True  # until this save is known to have been stored
        try:
            self.store.save(shard, lease_value=state.lease_value, last_id=state.last_id, write=write,
                            ack_ids=state.to_ack)
        except Fenced as exc:
            logger.warning("shard %d: %s; another worker owns it now", shard, exc)
            self._lose(state)
            return
        state.windows.checkpoint_saved(windows)
        state.dedupe.saved()
        state.full_checkpoint = False
        state.to_ack = []
        state.dirty = False
        state.had_checkpoint = True
        state.checkpointed_at = time.monotonic()
        if trim:
            self.housekeeping(state)

    def expire_dead_letters(self, *, force: bool = False) -> int:
        """Trim dead letters past ``TELEMETRY_DLQ_RETENTION``, at most every minute unless ``force``."""
        now = time.monotonic()
        if not force and now - self._dlq_trimmed_at < DLQ_TRIM_EVERY_S:
            return 0
        self._dlq_trimmed_at = now
        removed = self.letters.trim_older_than(self.config.dlq_retention_s)
        if removed:
            logger.info("removed %d dead letter(s) older than the retention of %gs (TELEMETRY_DLQ_RETENTION)",
                        removed, self.config.dlq_retention_s)
        return removed

    def housekeeping(self, state: ShardState) -> None:
        """Trim, forget old dead-letter positions; every few seconds: loss, lag, idle consumers."""
        shard = state.shard
        self.source.trim_acknowledged(shard, self.store.key(shard))
        margin_ms = int((self.config.allowed_lateness_s * 2 + self.config.window_s + 3600) * 1000)
        self.letters.forget_before(shard, parse_id(state.last_id)[0] - margin_ms)
        if time.monotonic() - state.checked_at < HEALTH_CHECK_EVERY_S:
            return
        state.checked_at = time.monotonic()
        self.expire_dead_letters()
        lost = self.source.lost_entries(shard, self.store.key(shard))
        if lost > state.lost_reported:
            self._losses.once(f"shard {shard}", logging.ERROR,
                              "shard %d: %d entries were removed by the length cap (TELEMETRY_STREAM_MAXLEN) "
                              "before they were processed: data lost; add workers or raise the cap",
                              shard, lost)
            self.stats.count(shard, "lost_entries", lost - state.lost_reported)
        state.lost_reported = lost
        group = self.source.group_info(shard)
        if group is not None and group.lag is not None:
            self.stats.gauge(shard, "lag_entries", group.lag)
        gone = self.source.remove_idle_consumers(shard, min_idle_ms=int(self.config.lease_s * 10_000))
        if gone:
            logger.info("shard %d: removed idle consumers with nothing pending from the group: %s",
                        shard, ", ".join(gone))

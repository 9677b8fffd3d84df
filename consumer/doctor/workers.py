"""The doctor's checks of the consuming side: consumer group, a running worker, and its progress.

A consumer group remembers every consumer that ever read from it: a worker that exited (a
``--drain`` run, a stopped service, a crash) stays listed, with an idle time that looks as fresh as
a live worker's for a while. So a consumer entry is not evidence of a running worker. What is:

- a shard lease (``PREFIX:{i}:lease``), which a running owner renews every third of its lease
  time and releases when it exits cleanly (a crashed owner's lease expires after ``lease_s``);
- a heartbeat in ``PREFIX:workers`` younger than ``lease_s`` (a worker with no shard of its own,
  when there are more workers than shards), removed when the worker exits cleanly.

With no running worker, the verdict depends on what waits: entries not yet delivered or not yet
acknowledged are ✗ (events arrive and nobody processes them); nothing waiting is ``warn`` (the
pipeline is drained and healthy; events sent now will wait in Redis until a worker runs).

A running worker whose oldest waiting entry grows older than the lag limit is behind or stuck;
when InfluxDB is failing at the same time the doctor reports the InfluxDB check as the cause
(see :meth:`consumer.doctor.checks.Doctor.run`).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from consumer.admin.stream_admin import GroupInfo, ShardInfo
from consumer.doctor.results import CheckResult, Status, fail, ok, skip
from producers.keys import lease_key, workers_key


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class WorkerPresence:
    """What Redis holds about running workers: leases by shard, heartbeat ages by worker."""

    leases: dict[int, str]
    heartbeat_age_s: dict[str, float]
    lease_s: float

    @property
    def live(self) -> list[str]:
        """Workers holding a lease or with a heartbeat younger than the lease time."""
        beating = {w for w, age in self.heartbeat_age_s.items() if age <= self.lease_s}
        return sorted(set(self.leases.values()) | beating)


def read_presence(client: redis.Redis[bytes], *, prefix: str, shards: int, now_ms: int,
                  lease_s: float) -> WorkerPresence:
    """Leases and heartbeats of the workers of ``prefix``, ages measured at ``now_ms``."""
    leases: dict[int, str] = {}
    for shard in range(shards):
        value = client.get(lease_key(prefix, shard))
        if value:
            leases[shard] = _text(value).rpartition(":")[0] or "?"
    beats = {
        _text(worker): max(0.0, (now_ms - int(stamp)) / 1000)
        for worker, stamp in client.hgetall(workers_key(prefix)).items()
    }
    return WorkerPresence(leases, beats, lease_s)


@dataclass(frozen=True, slots=True)
class ConsumerVerdicts:
    """Builds the group, consumer and lag checks of one doctor run."""

    group: str
    redis_url: str
    lag_limit_s: float

    @property
    def worker_fix(self) -> str:
        return (
            f"start the worker with the same settings: `telemetry consume` (TELEMETRY_GROUP={self.group}, "
            f"TELEMETRY_REDIS_URL={self.redis_url}) or `docker compose up -d worker`"
        )

    def checks(self, shards: list[ShardInfo], presence: WorkerPresence) -> list[CheckResult]:
        """``group_exists``, ``consumer_live`` and ``lag`` for the existing shard streams."""
        if not shards:
            return [
                skip("group_exists", "consumer group exists", "no stream yet"),
                skip("consumer_live", "worker consuming", "no stream yet"),
                skip("lag", "worker keeps up", "no stream yet"),
            ]
        groups = {s.key: s.group(self.group) for s in shards}
        without = [key for key, g in groups.items() if g is None]
        if without:
            return [
                self._group_missing(shards, without, presence),
                skip("consumer_live", "worker consuming", "no consumer group"),
                skip("lag", "worker keeps up", "no consumer group"),
            ]
        present = [g for g in groups.values() if g is not None]
        return [
            ok("group_exists", "consumer group exists", f"{self.group!r} on {len(shards)} stream(s)"),
            self._consumer_live(present, presence),
            self._lag(shards, groups, presence),
        ]

    def _group_missing(self, shards: list[ShardInfo], without: list[str],
                       presence: WorkerPresence) -> CheckResult:
        others = sorted({g.name for s in shards for g in s.groups} - {self.group})
        summary = f"group {self.group!r} missing on {', '.join(without)}"
        if others:
            names = ", ".join(repr(o) for o in others)
            return fail(
                "group_exists", "consumer group exists", f"{summary}; the streams are read by group {names}",
                f"if that is your worker, run doctor with TELEMETRY_GROUP={others[0]}; otherwise "
                + self.worker_fix,
                other_groups=others,
            )
        if len(without) == len(shards) and not presence.heartbeat_age_s and not presence.leases:
            summary += ": no worker has ever read these streams"
        return fail("group_exists", "consumer group exists", summary,
                    self.worker_fix + " (it creates the group and resumes from its checkpoints)")

    def _consumer_live(self, groups: list[GroupInfo], presence: WorkerPresence) -> CheckResult:
        title = "worker consuming"
        live = presence.live
        if live:
            held = f", leases on {len(presence.leases)} shard(s)" if presence.leases else ""
            return ok("consumer_live", title, f"running: {', '.join(live)}{held}",
                      leases=presence.leases, workers=live)
        consumers: dict[str, int] = {}
        for group in groups:
            for consumer in group.consumers:
                seen = consumers.get(consumer.name, consumer.idle_ms)
                consumers[consumer.name] = min(consumer.idle_ms, seen)
        if not consumers:
            return fail("consumer_live", title,
                        f"no worker has read from group {self.group!r} yet, and none holds a shard lease",
                        self.worker_fix)
        last = min(consumers, key=lambda name: consumers[name])
        gone = (f"no worker running: {last} exited (last read {consumers[last] / 1000:.0f}s ago; "
                "it holds no shard lease and sends no heartbeat)")
        waiting = sum((g.lag_entries or 0) + g.pending for g in groups)
        details = {"consumers": sorted(consumers), "waiting": waiting}
        if waiting:
            return fail("consumer_live", title, f"{gone}; entries waiting: {waiting}", self.worker_fix,
                        **details)
        return CheckResult(
            "consumer_live", title, Status.WARN, f"{gone}; nothing waits (drained)",
            "for continuous processing keep a worker running: `telemetry consume` (or `docker compose up -d "
            "worker`); events sent meanwhile wait in Redis",
            details,
        )

    def _lag(self, shards: list[ShardInfo], groups: dict[str, GroupInfo | None],
             presence: WorkerPresence) -> CheckResult:
        def behind_s(shard: ShardInfo) -> float:
            group = groups[shard.key]
            assert group is not None
            return max(group.lag_s, group.oldest_pending_age_s or 0.0)

        worst = max(shards, key=behind_s)
        group = groups[worst.key]
        assert group is not None
        lag_s = behind_s(worst)
        text = (f"worst {worst.key}: {group.lag_entries} entries not yet read, {group.pending} not yet "
                f"acknowledged, oldest {lag_s:.1f}s old")
        if lag_s <= self.lag_limit_s:
            return ok("lag", "worker keeps up", text, lag_s=lag_s)
        if presence.live:
            fix = (f"{', '.join(presence.live)} runs but does not keep up: look at its log (write errors? "
                   "memory budget?) and `telemetry top`; if it is stuck, restart it (SIGTERM, then "
                   "`telemetry consume`); if it is merely slow, start more workers (shards rebalance)")
        else:
            fix = "no worker is running to read them: " + self.worker_fix
        return fail("lag", "worker keeps up", f"{text} (limit {self.lag_limit_s:.0f}s)", fix, lag_s=lag_s)

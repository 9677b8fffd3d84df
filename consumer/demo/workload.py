"""A simulated bot platform: several bots, many users, each seed component at its own rate.

Each simulated user message goes to one bot and runs that bot's instrumented components
(:mod:`examples`): an attachment-risk check (the original scoring rules; users' frequency,
intensity and dependency phrases drift, so risk levels move between LOW, MEDIUM and HIGH), memory
routing, the character's emotional state, engagement analysis, trust checks (recoveries for users
whose trust declined) and the learning components. Heavy users write more often than light ones.

Every event goes through the real producer; :class:`CountingTelemetry` counts them per
measurement so the demo can compare what was sent with what InfluxDB holds.

``bad_rate`` is the share of attachment checks whose sensor misbehaves and reports a NaN
intensity, the kind of value the worker dead-letters (``invalid_value``) while the rest of the
batch goes through: the demo shows dead letters doing their job.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

from examples import (
    AttachmentMonitor,
    EmotionalStateTracker,
    LearningComponents,
    ProactiveConversationEngagementEngine,
    TrustRecoverySystem,
    UserActivity,
    VectorRouter,
)
from producers import BoundTelemetry, Telemetry

BOT_NAMES: Final = ("elena", "marcus", "jake", "gabriel", "sophia", "dream", "aethys", "ryan", "dotty")
QUERIES: Final = (
    "what did we talk about yesterday?",
    "I feel lonely tonight",
    "tell me about the ocean",
    "do you remember my sister's name?",
    "why do stars twinkle",
    "I had a rough day at work",
)


class _CountingHandle:
    """A bound handle that counts each event per measurement before recording it."""

    def __init__(self, handle: BoundTelemetry, counter: Counter[str], measurement: str) -> None:
        self._handle = handle
        self._counter = counter
        self._measurement = measurement

    def emit(self, fields: Any, tags: Any = None, ts: Any = None) -> None:
        self._counter[self._measurement] += 1
        self._handle.emit(fields, tags=tags, ts=ts)

    def count(self, field: str, value: int = 1, tags: Any = None, ts: Any = None) -> None:
        self._counter[self._measurement] += 1
        self._handle.count(field, value, tags=tags, ts=ts)

    def gauge(self, field: str, value: float, tags: Any = None, ts: Any = None) -> None:
        self._counter[self._measurement] += 1
        self._handle.gauge(field, value, tags=tags, ts=ts)

    def observe(self, field: str, value: float, tags: Any = None, ts: Any = None) -> None:
        self._counter[self._measurement] += 1
        self._handle.observe(field, value, tags=tags, ts=ts)


class CountingTelemetry:
    """The real producer, with a per-measurement count of the events the workload recorded."""

    def __init__(self, tel: Telemetry) -> None:
        self.tel = tel
        self.sent: Counter[str] = Counter()

    def bind(self, measurement: str, **tags: str) -> _CountingHandle:
        return _CountingHandle(self.tel.bind(measurement, **tags), self.sent, measurement)


@dataclass
class SimUser:
    """One simulated user and the slowly drifting state the components see."""

    user_id: str
    bot: int
    weight: float
    frequency: float
    intensity_mean: float
    dependency_rate: float
    consecutive_days: int
    active_days: int
    trust: float
    recovering: str | None = None

    def drift(self, rng: random.Random) -> None:
        """Move a little: attachment grows for some users and fades for others."""
        self.frequency = min(80.0, max(0.5, self.frequency * rng.lognormvariate(0.0, 0.05)))
        self.intensity_mean = min(0.98, max(0.05, self.intensity_mean + rng.gauss(0.0, 0.02)))
        self.dependency_rate = min(5.0, max(0.0, self.dependency_rate + rng.gauss(0.0, 0.05)))
        if rng.random() < 0.05:
            self.consecutive_days = min(30, self.consecutive_days + 1)
            self.active_days = min(30, self.active_days + 1)
        elif rng.random() < 0.01:
            self.consecutive_days = 0
        self.trust = min(1.0, max(0.0, self.trust + rng.gauss(0.0, 0.03)))


class Bot:
    """One bot with its instrumented components."""

    def __init__(self, tel: Any, name: str, rng: random.Random) -> None:
        self.name = name
        self.attachment = AttachmentMonitor(tel, bot_name=name)
        self.router = VectorRouter(tel, bot_name=name, rng=rng)
        self.emotions = EmotionalStateTracker(tel, bot_name=name, rng=rng)
        self.engagement = ProactiveConversationEngagementEngine(tel, bot_name=name)
        self.trust = TrustRecoverySystem(tel, bot_name=name)
        self.learning = LearningComponents(tel, bot_name=name)


class Workload:
    """Generates user messages against the bots; :meth:`message` runs one through every component.

    Usage::

        workload = Workload(Telemetry.from_env(), bots=3, users=200, seed=7)
        for _ in range(1000):
            workload.message()
        print(workload.sent)          # events per measurement
    """

    def __init__(
        self, tel: Telemetry, *, bots: int, users: int, seed: int | None = None, bad_rate: float = 0.0
    ) -> None:
        if not 1 <= bots <= len(BOT_NAMES):
            raise ValueError(f"bots must be between 1 and {len(BOT_NAMES)}")
        if users < 1:
            raise ValueError("users must be at least 1")
        self.rng = random.Random(seed)
        self.counting = CountingTelemetry(tel)
        self.bots = [Bot(self.counting, name, self.rng) for name in BOT_NAMES[:bots]]
        self.users = [self._new_user(i, bots) for i in range(users)]
        self._weights = [user.weight for user in self.users]
        self.messages = 0
        self.bad_rate = bad_rate
        self.bad_events = 0
        self.risk_levels: Counter[str] = Counter()

    @property
    def sent(self) -> Counter[str]:
        """Events recorded so far, per measurement."""
        return self.counting.sent

    def _new_user(self, index: int, bots: int) -> SimUser:
        rng = self.rng
        heavy = rng.random() < 0.15
        return SimUser(
            user_id=f"u{index:04d}",
            bot=rng.randrange(bots),
            weight=8.0 if heavy else 1.0,
            frequency=rng.uniform(20, 60) if heavy else rng.uniform(1, 15),
            intensity_mean=rng.uniform(0.5, 0.9) if heavy else rng.uniform(0.1, 0.6),
            dependency_rate=rng.uniform(1.0, 3.5) if heavy else rng.uniform(0.0, 0.8),
            consecutive_days=rng.randint(0, 20 if heavy else 5),
            active_days=rng.randint(5, 30 if heavy else 12),
            trust=rng.uniform(0.3, 0.95),
        )

    def message(self) -> None:
        """One user message through the bot's components."""
        rng = self.rng
        user = rng.choices(self.users, weights=self._weights)[0]
        user.drift(rng)
        bot = self.bots[user.bot]
        self.messages += 1
        intensity = round(min(1.0, max(0.0, rng.gauss(user.intensity_mean, 0.1))), 3)
        if self.bad_rate and rng.random() < self.bad_rate:
            intensity = float("nan")  # a misbehaving sensor: the worker dead-letters this event
            self.bad_events += 1
        activity = UserActivity(
            interaction_frequency=round(user.frequency, 2),
            emotional_intensity=intensity,
            dependency_count=min(14, max(0, int(rng.gauss(user.dependency_rate, 1.0)))),
            consecutive_days=user.consecutive_days,
            active_days_30=user.active_days,
        )
        level = bot.attachment.check(user.user_id, activity).risk_level
        if intensity == intensity:  # NaN is not equal to itself: a dead letter is no risk check
            self.risk_levels[level] += 1
        bot.router.route(rng.choice(QUERIES), user_id=user.user_id)
        bot.emotions.after_reply(user.user_id)
        bot.engagement.analyze_conversation_engagement(user.user_id, engagement=rng.random())
        if rng.random() < 0.2:
            bot.engagement.analyze_engagement_potential(
                user.user_id, silence_minutes=rng.expovariate(1 / 120)
            )
        self._trust(bot, user)
        self._learning(bot, user)

    def _trust(self, bot: Bot, user: SimUser) -> None:
        if user.recovering:
            if bot.trust.assess_recovery_progress(user.user_id, user.recovering, trust_value=user.trust):
                user.recovering = None
            else:
                user.trust = min(1.0, user.trust + 0.05)
        elif self.rng.random() < 0.3:
            severity = bot.trust.detect_trust_decline(user.user_id, trust_value=user.trust)
            if severity:
                bot.trust.activate_recovery(user.user_id, severity)
                user.recovering = severity

    def _learning(self, bot: Bot, user: SimUser) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            bot.learning.learn_from_message(
                user.user_id,
                facts=rng.choice((0, 0, 1, 2, 3)),
                moments=int(rng.random() < 0.2),
                insights=int(rng.random() < 0.3),
            )
        if rng.random() < 0.3:
            bot.learning.recall(user.user_id, results=rng.randint(0, 8))
        if rng.random() < 0.02:
            bot.learning.reflect(facts=rng.randint(0, 4), evolutions=int(rng.random() < 0.3))

"""Producer configuration: one frozen value object, read from the environment only here.

Usage::

    config = ProducerConfig.from_env()                 # TELEMETRY_* variables, defaults below
    config = ProducerConfig(redis_url="redis://cache:6379/0", shards=8)
    tel = Telemetry(config=config)

Every check happens at construction, so a bad value stops the program at start with one
:class:`~producers.durations.ConfigError` naming the variable, never later on the hot path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from producers.durations import ConfigError, env_secret, env_value, parse_int, parse_list
from producers.keys import DEFAULT_PREFIX as _KEYS_DEFAULT_PREFIX
from producers.keys import DEFAULT_SHARDS as _KEYS_DEFAULT_SHARDS
from producers.pseudonyms import Pseudonymizer

DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"
DEFAULT_PREFIX: Final = _KEYS_DEFAULT_PREFIX
DEFAULT_SHARDS: Final = _KEYS_DEFAULT_SHARDS
DEFAULT_STREAM_MAXLEN: Final = 10_000_000
DEFAULT_BUFFER_EVENTS: Final = 100_000
DEFAULT_FLUSH_INTERVAL_MS: Final = 100
DEFAULT_BATCH_MAX_EVENTS: Final = 2_000
DEFAULT_EXIT_TIMEOUT_MS: Final = 2_000

ENV_REDIS_URL: Final = "TELEMETRY_REDIS_URL"
ENV_PREFIX: Final = "TELEMETRY_STREAM_PREFIX"
ENV_SHARDS: Final = "TELEMETRY_SHARDS"
ENV_STREAM_MAXLEN: Final = "TELEMETRY_STREAM_MAXLEN"
ENV_BUFFER_EVENTS: Final = "TELEMETRY_BUFFER_EVENTS"
ENV_PSEUDONYMIZE: Final = "TELEMETRY_PSEUDONYMIZE"
ENV_PSEUDONYM_KEY: Final = "TELEMETRY_PSEUDONYM_KEY"

CLUSTER_SCHEME: Final = "redis+cluster://"
_SCHEMES: Final = ("redis://", "rediss://", "unix://", CLUSTER_SCHEME, "rediss+cluster://")


@dataclass(frozen=True, kw_only=True, slots=True)
class ProducerConfig:
    """Settings of one :class:`~producers.Telemetry` producer.

    Attributes:
        redis_url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` (Redis Cluster).
        prefix: streams are ``PREFIX:{0}`` … ``PREFIX:{shards-1}``.
        shards: number of stream shards; must match the worker's.
        stream_maxlen: approximate hard cap per shard stream (a last resort; trimming loses data).
        buffer_events: in-process bound; past it the oldest events are dropped and counted.
        flush_interval_ms: longest time an event waits in the buffer while traffic is light.
        batch_max_events: events per batch (an entry holds at most this many); a full batch wakes
            the flusher early. While the flusher keeps up it sends smaller entries (0.3 ms of
            encoding each, so that no ``emit`` waits longer for the interpreter lock); while it
            catches up, up to 4 full batches share one send and are held while retried.
        exit_timeout_ms: how long the interpreter-exit flush may take.
        pseudonymize: tag keys (e.g. ``user_id``) whose values the flusher thread replaces with
            their pseudonyms before anything leaves the process (the worker's hash, see
            :mod:`producers.pseudonyms`); empty: the producer ships tags as given.
        pseudonym_key: the HMAC key for that (``TELEMETRY_PSEUDONYM_KEY`` or its ``_FILE``);
            never shown in ``repr``.
    """

    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = DEFAULT_PREFIX
    shards: int = DEFAULT_SHARDS
    stream_maxlen: int = DEFAULT_STREAM_MAXLEN
    buffer_events: int = DEFAULT_BUFFER_EVENTS
    flush_interval_ms: int = DEFAULT_FLUSH_INTERVAL_MS
    batch_max_events: int = DEFAULT_BATCH_MAX_EVENTS
    exit_timeout_ms: int = DEFAULT_EXIT_TIMEOUT_MS
    pseudonymize: tuple[str, ...] = ()
    pseudonym_key: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.redis_url, str) or not self.redis_url.startswith(_SCHEMES):
            raise ConfigError(f"{ENV_REDIS_URL}={self.redis_url!r} is not a Redis URL "
                              "(use redis://host:6379/0 or redis+cluster://host:7000)")
        if not isinstance(self.prefix, str) or not self.prefix or any(c in self.prefix for c in "{} \n"):
            raise ConfigError(f"{ENV_PREFIX}={self.prefix!r} must be a non-empty name without braces "
                              "or spaces")
        _check_int(ENV_SHARDS, self.shards, 1)
        _check_int(ENV_STREAM_MAXLEN, self.stream_maxlen, 1)
        _check_int(ENV_BUFFER_EVENTS, self.buffer_events, 1)
        _check_int("flush_interval_ms", self.flush_interval_ms, 1)
        _check_int("batch_max_events", self.batch_max_events, 1)
        _check_int("exit_timeout_ms", self.exit_timeout_ms, 0)
        if isinstance(self.pseudonymize, str) or not all(isinstance(k, str) and k for k in self.pseudonymize):
            raise ConfigError(f"{ENV_PSEUDONYMIZE}={self.pseudonymize!r} must be tag keys (a tuple of names)")
        if self.pseudonymize and not self.pseudonym_key:
            raise ConfigError(f"{ENV_PSEUDONYMIZE} is set but {ENV_PSEUDONYM_KEY} (or _FILE) is not")

    def pseudonymizer(self) -> Pseudonymizer | None:
        """The flusher's pseudonymizer, or ``None`` when pseudonymisation is off here."""
        if not self.pseudonymize:
            return None
        return Pseudonymizer(tuple(self.pseudonymize), (self.pseudonym_key or "").encode())

    @property
    def is_cluster(self) -> bool:
        """True for a ``redis+cluster://`` URL: the producer then uses a RedisCluster client."""
        return "+cluster://" in self.redis_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ProducerConfig:
        """Read the TELEMETRY_* variables (``env`` defaults to ``os.environ``); ``overrides`` win.

        Raises:
            ConfigError: a variable holds a bad value; the message names it.
        """
        values: dict[str, object] = {}
        url = env_value(env, ENV_REDIS_URL)
        if url is not None:
            values["redis_url"] = url.strip()
        prefix = env_value(env, ENV_PREFIX)
        if prefix is not None:
            values["prefix"] = prefix.strip()
        for name, field, minimum in ((ENV_SHARDS, "shards", 1), (ENV_STREAM_MAXLEN, "stream_maxlen", 1),
                                     (ENV_BUFFER_EVENTS, "buffer_events", 1)):
            raw = env_value(env, name)
            if raw is not None:
                values[field] = parse_int(name, raw, minimum=minimum)
        tag_keys = env_value(env, ENV_PSEUDONYMIZE)
        if tag_keys is not None:
            values["pseudonymize"] = parse_list(tag_keys)
        secret = env_secret(env, ENV_PSEUDONYM_KEY)
        if secret is not None:
            values["pseudonym_key"] = secret
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} is not an integer")
    if value < minimum:
        raise ConfigError(f"{name}={value!r} must be at least {minimum}")

"""Parsing of the configuration values shared by producer and worker.

Durations accept ``500ms``, ``10s``, ``5m``, ``1h`` (and a bare number of seconds). Every parse
error is a :class:`ConfigError` whose message names the variable, so a program can stop at start
with one clear line instead of a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable and what is expected."""


def parse_duration_s(name: str, raw: str) -> float:
    """Parse ``raw`` (``500ms``, ``10s``, ``5m``, ``1h``) into seconds; ``name`` is for the error."""
    match = _DURATION.match(raw)
    if not match:
        raise ConfigError(f"{name}={raw!r} is not a duration (use e.g. 500ms, 10s, 5m, 1h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_int(name: str, raw: str, *, minimum: int | None = None) -> int:
    """Parse an integer, optionally with a lower bound."""
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def parse_bool(name: str, raw: str) -> bool:
    """Parse ``1/0, true/false, yes/no, on/off``."""
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    """Parse one of ``choices`` (case-insensitive)."""
    lowered = raw.strip().lower()
    if lowered not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return lowered


def parse_list(raw: str) -> tuple[str, ...]:
    """Split a comma-separated list, dropping blanks."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def env_value(env: Mapping[str, str] | None, name: str) -> str | None:
    """Read ``name`` from ``env`` (default: ``os.environ``); ``None`` when unset or empty."""
    source = os.environ if env is None else env
    value = source.get(name)
    return value if value not in (None, "") else None


def env_secret(env: Mapping[str, str] | None, name: str) -> str | None:
    """Read a secret from ``NAME`` or from the file named by ``NAME_FILE`` (Docker/K8s secrets)."""
    value = env_value(env, name)
    if value is not None:
        return value
    path = env_value(env, f"{name}_FILE")
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None


def mask_secret(value: str | None) -> str:
    """How a secret appears in any output: never the value itself."""
    return "****" if value else "-"

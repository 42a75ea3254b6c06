"""Parsers of the environment's values for ``callcenter/settings.py``
(the only module that calls them, and so still the only one that reads the
environment): each raises ``ImproperlyConfigured`` naming the variable,
so a malformed value stops every process at start with one clear line.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


def env_choice_or_bool(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (off, ..., all); a boolean value is the last (true) or the first (false)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in choices:
        return value
    if value in _TRUE or value in _FALSE:
        return choices[-1] if value in _TRUE else choices[0]
    raise ImproperlyConfigured(f"{name}={raw!r} must be one of {', '.join(choices)} (or 1/0, true/false)")


def env_seconds_or_none(name: str, default: float | None, *, maximum: float) -> float | None:
    """Seconds in [0, maximum], or None ('none')."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value == "none":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} must be a number of seconds or 'none'") from None
    if not 0.0 <= seconds <= maximum:  # also rejects nan
        raise ImproperlyConfigured(f"{name}={value!r} must be between 0 and {maximum:g} seconds")
    return seconds


# No integer setting needs more (a billion seconds is 31 years); a larger value is a typo, and
# one past what a float or a C int holds would fail later, where the setting is used.
ENV_INT_MAX = 10**9


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int = ENV_INT_MAX) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}")
    if value > maximum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at most {maximum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


_DATABASE_SCHEMES = {"postgres", "postgresql", "pgsql", "sqlite"}


def database_from_url(url: str, *, conn_max_age: int) -> dict:
    scheme = urlsplit(url).scheme
    if scheme not in _DATABASE_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL has scheme {scheme!r}; expected postgres://USER:PASSWORD@HOST:PORT/NAME or sqlite:///PATH"
        )
    try:
        config = dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=True)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL could not be parsed: {exc}") from None
    if not config.get("NAME"):
        raise ImproperlyConfigured("DATABASE_URL names no database (expected .../NAME or sqlite:///PATH)")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Web server and worker write concurrently: wait for the lock instead
        # of failing, and take it at BEGIN so upgrades cannot deadlock.
        config["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
        if config["NAME"] != ":memory:":
            try:
                Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ImproperlyConfigured(f"DATABASE_URL: cannot create the SQLite file's folder: {exc}") from None
    return config


def ip_networks(name: str, values: list[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {value!r} is not a network: use addresses or CIDR blocks, e.g. 127.0.0.0/8,10.0.0.0/8"
            ) from None
    return tuple(networks)

"""What the main command checks before and while it starts the system:
where a host is reached from, whether serving it is safe with the
development key, free ports, and whether the web server, Redis and the
database answer."""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import redis

from callcenter.errors import ConfigurationError


def local_host(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def loopback(host: str) -> bool:
    """Whether a server bound to ``host`` can be reached from this machine only."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0].split("%")[0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(address).is_loopback for address in addresses)


def exposure_check(*, host: str, development_key: bool) -> None:
    """Refuse to serve other machines with the published development key
    (and the debug pages that come with it)."""
    if development_key and not loopback(host):
        raise ConfigurationError(
            f"--host {host or repr(host)} lets other machines reach the web server, but DJANGO_SECRET_KEY is not set "
            "(the development key is public and debug pages are on): set DJANGO_SECRET_KEY "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(50))') and DJANGO_ALLOWED_HOSTS, "
            "or serve this machine only with --host 127.0.0.1"
        )


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def redis_answers(url: str) -> bool:
    """Whether the Redis at ``url`` answers a ping within a second."""
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def database_check() -> None:
    from django.db import OperationalError, connection

    try:
        connection.ensure_connection()
    except OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(f"cannot reach the database (DATABASE_URL): {reason}") from None
    finally:
        connection.close()


def redact_url(url: str) -> str:
    """``url`` with its password, if any, as ``***``."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url

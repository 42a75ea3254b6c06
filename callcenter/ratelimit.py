"""Rate limiting of logins: ``LoginRateLimitMiddleware`` and the counters of
failed logins it reads.

Only FAILED logins count: Django's ``user_login_failed`` signal, sent when
the login form's ``authenticate()`` rejects a username and password, that is
after the CSRF check and after the password was checked. A POST refused by
CSRF, a form left incomplete or a page view counts nothing, so nobody can
lock an account by posting its username.

Two counters, in fixed windows of ``LOGIN_RATE_WINDOW_S`` kept in Redis
(shared by all web processes), each failed login adds one to both:

- the **pair** (username, client address): ``LOGIN_RATE_LIMIT`` failures of
  one username from one address refuse that username *from that address*;
- the **address**: ``LOGIN_RATE_LIMIT_PER_ADDRESS`` (looser) failures from
  one address, whatever the usernames, refuse that address (password
  spraying).

A POST to one of ``LOGIN_RATE_LIMIT_PATHS`` whose pair or address is at its
limit is answered 429 with ``Retry-After`` before the password is checked
(even the right one). Keying by the pair rather than by the username alone
is deliberate: someone hammering a username from their address locks out
only themselves, and its owner still logs in from anywhere else. The price:
guesses at one username from many addresses are limited per address only
(``LOGIN_RATE_LIMIT`` each), which strong passwords (Django's validators)
must carry. An IPv6 client counts by its /64 network (one host usually
holds a whole /64). A successful login clears its pair's counter.

Behind a reverse proxy every client has the proxy's address: run Daphne
with ``--proxy-headers`` there so that the client address is the real one.

When Redis cannot be asked, the attempt is let through (the password is
still checked) and the failure is logged.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import unicodedata
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.http import HttpRequest, HttpResponse

from callcenter.ops import metrics

logger = logging.getLogger(__name__)

MAX_USERNAME = 150
KEY_PREFIX = "login:"  # Redis keys login:pair:<hash>, login:addr:<hash>


def _key(kind: str, value: str) -> str:
    return KEY_PREFIX + kind + ":" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _client(request: HttpRequest) -> str:
    """The client's address as counted: IPv4 as is, IPv6 by its /64."""
    raw = request.META.get("REMOTE_ADDR") or "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if address.version == 6:
        if address.ipv4_mapped is not None:  # ::ffff:10.0.0.1 from a server bound to ::
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _username(raw: object) -> str:
    """As the login form cleans it (NFKC, stripped), and case-folded."""
    return unicodedata.normalize("NFKC", str(raw or "")).strip().lower()[:MAX_USERNAME]


def _keys(*, client: str, username: str) -> tuple[str, str]:
    return _key("pair", f"{username}\x00{client}"), _key("addr", client)


def login_refused(*, client: str, username: str) -> bool:
    """Whether this client's failed logins, for this username or in all,
    are at their limit (reads only; a refused attempt counts nothing)."""
    from callcenter.ops import redisconn

    pair_key, address_key = _keys(client=client, username=username)
    pair, address = (int(v or 0) for v in redisconn.client().mget([pair_key, address_key]))
    return (bool(username) and pair >= settings.LOGIN_RATE_LIMIT) or address >= settings.LOGIN_RATE_LIMIT_PER_ADDRESS


def login_failure_count(*, client: str, username: str) -> None:
    """Count one failed login of ``username`` from ``client``."""
    from callcenter.ops import redisconn

    window = settings.LOGIN_RATE_WINDOW_S
    pair_key, address_key = _keys(client=client, username=username)
    redisconn.count_attempt(key=pair_key, window_s=window)
    redisconn.count_attempt(key=address_key, window_s=window)


def login_success_forget(*, client: str, username: str) -> None:
    """A successful login clears its pair's failures (not the address's)."""
    from callcenter.ops import redisconn

    redisconn.client().delete(_keys(client=client, username=username)[0])


def _on_login_failed(sender: object, credentials: dict, request: HttpRequest | None = None, **kwargs: object) -> None:
    if request is None or not settings.LOGIN_RATE_LIMIT:
        return  # not a web login (a shell, a management command)
    from django.contrib.auth import get_user_model

    username = _username(credentials.get(get_user_model().USERNAME_FIELD, credentials.get("username")))
    try:
        login_failure_count(client=_client(request), username=username)
    except Exception as exc:  # noqa: BLE001 - Redis down: the failure goes uncounted, logged
        logger.warning("failed login not counted (Redis: %s)", exc)


def _on_logged_in(sender: object, request: HttpRequest | None = None, user: object = None, **kwargs: object) -> None:
    if request is None or user is None or not settings.LOGIN_RATE_LIMIT:
        return
    try:
        login_success_forget(client=_client(request), username=_username(user.get_username()))
    except Exception as exc:  # noqa: BLE001 - Redis down: the old failures expire with their window
        logger.warning("login counter not cleared (Redis: %s)", exc)


# Connected when the middleware module is imported, i.e. whenever the
# middleware that reads the counters is installed.
user_login_failed.connect(_on_login_failed, dispatch_uid="callcenter.ratelimit.failed")
user_logged_in.connect(_on_logged_in, dispatch_uid="callcenter.ratelimit.logged_in")


class LoginRateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            request.method == "POST"
            and settings.LOGIN_RATE_LIMIT
            and request.path in settings.LOGIN_RATE_LIMIT_PATHS
        ):
            client = _client(request)
            username = request.POST.get("username", "") if request.content_type != "application/json" else ""
            try:
                refused = login_refused(client=client, username=_username(username))
            except Exception as exc:  # noqa: BLE001 - Redis down: fail open, the password is still checked
                logger.warning("login rate limit not checked (Redis: %s)", exc)
                refused = False
            if refused:
                metrics.LOGIN_THROTTLED.inc()
                logger.warning("failed logins from %s over the limit: refused with 429", client)
                response = HttpResponse(
                    "Too many failed login attempts; try again later.\n", status=429, content_type="text/plain"
                )
                response["Retry-After"] = str(settings.LOGIN_RATE_WINDOW_S)
                return response
        return self.get_response(request)

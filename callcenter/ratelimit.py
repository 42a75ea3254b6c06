"""Rate limiting of logins: ``LoginRateLimitMiddleware``.

Every POST to one of ``LOGIN_RATE_LIMIT_PATHS`` (the admin's and the agent
page's login forms) counts as one attempt for the client's address and one
for the username tried, in fixed windows of ``LOGIN_RATE_WINDOW_S`` kept in
Redis (shared by all web processes). Over ``LOGIN_RATE_LIMIT`` attempts on
either, the POST is answered 429 with ``Retry-After`` and never reaches the
login view. When Redis cannot be asked, the attempt is let through (the
password is still checked) and the failure is logged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from callcenter import metrics

logger = logging.getLogger(__name__)

MAX_USERNAME = 150


KEY_PREFIX = "login:"  # Redis keys login:addr:<hash>, login:user:<hash>


def _key(kind: str, value: str) -> str:
    return KEY_PREFIX + kind + ":" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def login_attempts_over_limit(*, address: str, username: str) -> bool:
    """Count one attempt; whether the address or the username is over the limit."""
    from callcenter import redisconn

    window = settings.LOGIN_RATE_WINDOW_S
    counts = [redisconn.count_attempt(key=_key("addr", address), window_s=window)]
    if username:
        counts.append(redisconn.count_attempt(key=_key("user", username.strip().lower()[:MAX_USERNAME]), window_s=window))
    return max(counts) > settings.LOGIN_RATE_LIMIT


class LoginRateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            request.method == "POST"
            and settings.LOGIN_RATE_LIMIT
            and request.path in settings.LOGIN_RATE_LIMIT_PATHS
        ):
            address = request.META.get("REMOTE_ADDR") or "unknown"
            username = request.POST.get("username", "") if request.content_type != "application/json" else ""
            try:
                over = login_attempts_over_limit(address=address, username=str(username))
            except Exception as exc:  # noqa: BLE001 - Redis down: fail open, the password is still checked
                logger.warning("login rate limit not checked (Redis: %s)", exc)
                over = False
            if over:
                metrics.LOGIN_THROTTLED.inc()
                logger.warning("login attempts over the limit from %s: refused with 429", address)
                response = HttpResponse(
                    "Too many login attempts; try again later.\n", status=429, content_type="text/plain"
                )
                response["Retry-After"] = str(settings.LOGIN_RATE_WINDOW_S)
                return response
        return self.get_response(request)

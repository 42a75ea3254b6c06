"""Security of the web surface: the agents' feed checks the Origin, stored
audio is never served as a public file, production cookies are secure."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from callcenter.asgi import application
from callcenter.calls import services
from tests.fixtures.calls import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def _staff_cookie(django_user_model) -> bytes:
    user = django_user_model.objects.create_user("origin-agent", is_staff=True, is_superuser=True)
    return session_cookie(user).encode()


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [(b"http://127.0.0.1:8000", True), (b"https://evil.example.com", False), (None, False)],
    ids=["own-host", "foreign-origin", "no-origin"],
)
def test_the_agents_feed_refuses_a_foreign_origin_even_with_a_valid_session(django_user_model, origin, accepted):
    headers = [(b"cookie", _staff_cookie(django_user_model))]
    if origin is not None:
        headers.append((b"origin", origin))

    async def connect() -> bool:
        communicator = WebsocketCommunicator(application, "/ws/agent/", headers=headers)
        connected, _ = await communicator.connect(timeout=10)
        await communicator.disconnect()
        return connected

    assert async_to_sync(connect)() is accepted


def test_media_files_are_not_served_by_url(client, shared_var_dir, django_user_model, settings):
    call = services.call_start(protocol="pcm")
    segment = services.segment_create(call_id=call.pk, index=0, start_ms=0, end_ms=100, sample_rate=8000,
                                      audio=b"RIFF....WAVE")  # fmt: skip
    client.force_login(django_user_model.objects.create_superuser("media-admin", password=None))

    for url in [f"/media/{segment.audio.name}", f"{settings.MEDIA_URL}{segment.audio.name}", "/static/../media/"]:
        assert client.get(url).status_code == 404, url


def test_production_settings_make_cookies_secure_and_https_only():
    env = {**os.environ, "DJANGO_SECRET_KEY": "x" * 60, "DJANGO_DEBUG": "0", "DJANGO_SECURE": "1",
           "DJANGO_ALLOWED_HOSTS": "calls.example.com"}  # fmt: skip
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, "
        "s.SESSION_COOKIE_HTTPONLY, 'callcenter.ratelimit.LoginRateLimitMiddleware' in s.MIDDLEWARE)"
    )
    result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], env={
        **env, "DJANGO_SETTINGS_MODULE": "callcenter.settings"}, capture_output=True, text=True, timeout=60)  # fmt: skip

    assert result.stdout.split() == ["True"] * 6, result.stderr

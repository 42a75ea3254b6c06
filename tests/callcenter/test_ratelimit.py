"""Login rate limiting: every login form's POSTs, per client address and
per username, counted in the real Redis."""

from __future__ import annotations

import pytest

from callcenter import metrics, redisconn
from callcenter.ratelimit import KEY_PREFIX

pytestmark = pytest.mark.django_db

LOGIN_PATHS = ["/admin/login/", "/accounts/login/"]


@pytest.fixture(autouse=True)
def fresh_counters(settings):
    settings.LOGIN_RATE_LIMIT = 3
    settings.LOGIN_RATE_WINDOW_S = 60
    r = redisconn.client()
    for key in r.scan_iter(match=KEY_PREFIX + "*"):
        r.delete(key)


@pytest.mark.parametrize("path", LOGIN_PATHS)
def test_a_username_over_the_limit_gets_429_from_any_address(client, django_user_model, path):
    django_user_model.objects.create_user("alice", password="correct horse battery", is_staff=True)
    throttled_before = metrics.LOGIN_THROTTLED._value.get()

    answers = [
        client.post(path, {"username": "alice", "password": f"guess-{i}"}, REMOTE_ADDR=f"10.0.0.{i}").status_code
        for i in range(4)
    ]
    # Even the right password is refused while the limit holds.
    right = client.post(path, {"username": "Alice", "password": "correct horse battery"}, REMOTE_ADDR="10.0.1.1")

    assert answers == [200, 200, 200, 429]
    assert right.status_code == 429 and right["Retry-After"] == "60"
    assert b"Too many login attempts" in right.content
    assert "_auth_user_id" not in client.session
    assert metrics.LOGIN_THROTTLED._value.get() == throttled_before + 2


def test_one_address_over_the_limit_is_refused_whatever_the_username(client):
    answers = [
        client.post("/admin/login/", {"username": f"user{i}", "password": "x"}, REMOTE_ADDR="10.9.9.9").status_code
        for i in range(5)
    ]
    other = client.post("/admin/login/", {"username": "user0b", "password": "x"}, REMOTE_ADDR="10.9.9.10")

    assert answers == [200, 200, 200, 429, 429]
    assert other.status_code == 200


def test_a_login_below_the_limit_works_and_pages_are_not_counted(client, django_user_model):
    django_user_model.objects.create_user("bob", password="correct horse battery", is_staff=True)
    for _ in range(10):
        assert client.get("/admin/login/").status_code == 200

    response = client.post("/admin/login/?next=/admin/", {"username": "bob", "password": "correct horse battery"})

    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_logins_are_let_through_when_redis_is_down(client, settings, django_user_model):
    django_user_model.objects.create_user("carol", password="correct horse battery", is_staff=True)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    answers = [client.post("/admin/login/", {"username": "carol", "password": "no"}).status_code for _ in range(5)]

    assert answers == [200] * 5  # the password is still checked


def test_csrf_is_enforced_on_the_login_form(django_user_model):
    from django.test import Client

    django_user_model.objects.create_user("dave", password="correct horse battery", is_staff=True)
    strict = Client(enforce_csrf_checks=True)

    response = strict.post("/admin/login/", {"username": "dave", "password": "correct horse battery"})

    assert response.status_code == 403

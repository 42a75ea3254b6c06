"""Login rate limiting: failed logins only, per username and client address
and per address, counted in the real Redis."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from callcenter.ops import metrics, redisconn
from callcenter.ratelimit import KEY_PREFIX

pytestmark = pytest.mark.django_db

LOGIN_PATHS = ["/admin/login/", "/accounts/login/"]


@pytest.fixture(autouse=True)
def fresh_counters(settings):
    settings.LOGIN_RATE_LIMIT = 3
    settings.LOGIN_RATE_LIMIT_PER_ADDRESS = 5
    settings.LOGIN_RATE_WINDOW_S = 60
    r = redisconn.client()
    for key in r.scan_iter(match=KEY_PREFIX + "*"):
        r.delete(key)


def _csrf_post(client, path: str, data: dict, address: str):
    """A login form post as a browser makes it: the page, then the form with its CSRF token."""
    page = client.get(path, REMOTE_ADDR=address)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    return client.post(path, {**data, "csrfmiddlewaretoken": token}, REMOTE_ADDR=address)


@pytest.mark.parametrize("path", LOGIN_PATHS)
def test_posts_refused_by_csrf_count_nothing_and_the_owner_still_logs_in(django_user_model, path):
    django_user_model.objects.create_user("erin", password="correct horse battery", is_staff=True)
    strict = Client(enforce_csrf_checks=True)

    bare = [strict.post(path, {"username": "erin", "password": "x"}, REMOTE_ADDR="10.0.0.66").status_code
            for _ in range(6)]  # fmt: skip
    strict.get(path, REMOTE_ADDR="10.0.0.66")  # a real CSRF cookie, and a token that does not match it
    forged = [strict.post(path, {"username": "erin", "password": "x", "csrfmiddlewaretoken": "A" * 64},
                          REMOTE_ADDR="10.0.0.66").status_code for _ in range(6)]  # fmt: skip
    right = _csrf_post(strict, path, {"username": "erin", "password": "correct horse battery"}, "10.0.0.66")

    assert bare == [403] * 6 and forged == [403] * 6
    assert right.status_code == 302 and "_auth_user_id" in strict.session


@pytest.mark.parametrize("path", LOGIN_PATHS)
def test_wrong_passwords_count_and_get_429_after_the_limit(client, django_user_model, path):
    django_user_model.objects.create_user("alice", password="correct horse battery", is_staff=True)
    throttled_before = metrics.LOGIN_THROTTLED._value.get()

    answers = [
        client.post(path, {"username": "alice", "password": f"guess-{i}"}, REMOTE_ADDR="10.0.0.1").status_code
        for i in range(4)
    ]
    # Even the right password is refused from that address while the limit holds.
    right = client.post(path, {"username": "Alice", "password": "correct horse battery"}, REMOTE_ADDR="10.0.0.1")

    assert answers == [200, 200, 200, 429]
    assert right.status_code == 429 and right["Retry-After"] == "60"
    assert b"Too many failed login attempts" in right.content
    assert "_auth_user_id" not in client.session
    assert metrics.LOGIN_THROTTLED._value.get() == throttled_before + 2


@pytest.mark.parametrize("path", LOGIN_PATHS)
def test_the_right_password_from_another_address_logs_in_while_one_address_is_locked_out(
    client, django_user_model, path
):
    django_user_model.objects.create_user("alice", password="correct horse battery", is_staff=True)
    attacker = Client()

    hammered = [
        attacker.post(path, {"username": "alice", "password": f"guess-{i}"}, REMOTE_ADDR="10.0.0.66").status_code
        for i in range(6)
    ]
    owner = client.post(path, {"username": "alice", "password": "correct horse battery"}, REMOTE_ADDR="10.0.0.7")

    assert hammered == [200, 200, 200, 429, 429, 429]
    assert owner.status_code == 302 and "_auth_user_id" in client.session
    assert "_auth_user_id" not in attacker.session


def test_one_address_failing_for_many_usernames_is_refused_whatever_the_username(client):
    answers = [
        client.post("/admin/login/", {"username": f"user{i}", "password": "x"}, REMOTE_ADDR="10.9.9.9").status_code
        for i in range(7)
    ]
    other = client.post("/admin/login/", {"username": "user0", "password": "x"}, REMOTE_ADDR="10.9.9.10")

    assert answers == [200] * 5 + [429, 429]  # LOGIN_RATE_LIMIT_PER_ADDRESS = 5
    assert other.status_code == 200


def test_an_ipv6_client_counts_by_its_64_network(client):
    answers = [
        client.post("/admin/login/", {"username": f"user{i}", "password": "x"},
                    REMOTE_ADDR=f"2001:db8:1:2::{i + 1:x}").status_code  # fmt: skip
        for i in range(6)
    ]

    assert answers == [200] * 5 + [429]


def test_a_successful_login_clears_the_failures_of_its_username_and_address(client, django_user_model):
    django_user_model.objects.create_user("frank", password="correct horse battery", is_staff=True)

    def attempt(password: str) -> int:
        return client.post("/admin/login/", {"username": "frank", "password": password},
                           REMOTE_ADDR="10.0.0.8").status_code  # fmt: skip

    answers = [attempt("no"), attempt("no"), attempt("correct horse battery")]
    client.logout()
    answers += [attempt("no") for _ in range(4)]

    assert answers == [200, 200, 302, 200, 200, 200, 429]


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
    django_user_model.objects.create_user("dave", password="correct horse battery", is_staff=True)
    strict = Client(enforce_csrf_checks=True)

    response = strict.post("/admin/login/", {"username": "dave", "password": "correct horse battery"})

    assert response.status_code == 403

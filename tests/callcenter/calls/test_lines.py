"""Media lines: tokens shown once, stored hashed, checked on every socket."""

from __future__ import annotations

import hashlib
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from callcenter.calls import services
from callcenter.calls.models import Customer, Line
from callcenter.errors import Conflict, InvalidInput, InvalidToken, LineDisabled

pytestmark = pytest.mark.django_db


def test_a_line_token_is_returned_once_and_only_its_sha256_is_stored():
    line, token = services.line_create(name="twilio-main")

    assert len(token) >= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert line.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(Line.objects.values().get())
    assert services.line_authenticate(token=token) == line


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "a valid line token is required"),
        ("", "a valid line token is required"),
        ("x" * 500, "this line token is not valid (longer than 200 characters)"),
        ("not-a-token", "this line token is not valid"),
    ],
)
def test_a_missing_or_unknown_token_is_refused(token, message):
    services.line_create(name="a")
    with pytest.raises(InvalidToken) as refused:
        services.line_authenticate(token=token)
    assert refused.value.message.startswith(message)


def test_a_disabled_line_is_refused_and_a_rotated_token_replaces_the_old_one():
    line, old = services.line_create(name="a", enabled=False)
    with pytest.raises(LineDisabled):
        services.line_authenticate(token=old)

    Line.objects.filter(pk=line.pk).update(enabled=True)
    _, new = services.line_token_rotate(line_id=line.pk)

    assert services.line_authenticate(token=new) == line
    with pytest.raises(InvalidToken):
        services.line_authenticate(token=old)


def test_line_names_are_unique_and_not_empty():
    services.line_create(name="a")
    with pytest.raises(Conflict):
        services.line_create(name=" a ")
    with pytest.raises(InvalidInput):
        services.line_create(name="  ")


def test_create_line_prints_the_token_once_and_refuses_a_taken_name():
    out = StringIO()
    call_command("create_line", "sip-trunk", stdout=out)

    token = re.search(r"token:\s+(\S+)", out.getvalue()).group(1)
    assert services.line_authenticate(token=token).name == "sip-trunk"
    assert f"/ws/media/twilio/{token}" in out.getvalue()
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_line", "sip-trunk", stdout=StringIO())


def test_adding_a_line_in_the_admin_shows_its_token_once(admin_client):
    response = admin_client.post(reverse("admin:calls_line_add"), {"name": "from-admin", "enabled": "on"}, follow=True)

    page = response.content.decode()
    token = re.search(r"shown only now.*: ([A-Za-z0-9_-]{40,})", page).group(1)
    assert services.line_authenticate(token=token).name == "from-admin"
    assert admin_client.get(reverse("admin:calls_line_changelist")).content.decode().count(token) == 0


def test_issuing_a_new_token_in_the_admin_shows_it_and_invalidates_the_old(admin_client):
    line, old = services.line_create(name="rotate-me")

    response = admin_client.post(
        reverse("admin:calls_line_changelist"),
        {"action": "issue_new_token", "_selected_action": [line.pk]},
        follow=True,
    )

    token = re.search(r"shown only now.*: ([A-Za-z0-9_-]{40,})", response.content.decode()).group(1)
    assert services.line_authenticate(token=token) == line
    with pytest.raises(InvalidToken):
        services.line_authenticate(token=old)


@pytest.mark.parametrize(
    ("caller", "customer_id", "expected_phone"),
    [
        ("+1 (555) 010-0001", None, "+15550100001"),
        ("anonymous", None, None),
        ("sip:alice@example.com", "c-1", "+15550100009"),
        (None, "unknown-id", None),
        ("+15550100002", "x" * 300, "+15550100002"),
    ],
)
def test_a_call_finds_or_creates_its_customer_from_number_or_id(caller, customer_id, expected_phone):
    services.customer_create(phone="+15550100009", external_id="c-1")

    customer = services.customer_for_caller(caller=caller, customer_external_id=customer_id)

    assert (customer.phone if customer else None) == expected_phone
    assert Customer.objects.filter(phone="+15550100001").exists() == (expected_phone == "+15550100001")

"""The admin pages supervisors use render, search and filter."""

from __future__ import annotations

import pytest
from django.urls import reverse

from callcenter.calls import services
from callcenter.calls.models import Agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def call_with_transcript(django_user_model):
    agent = Agent.objects.create(user=django_user_model.objects.create_user("agent1"), display_name="Jo")
    customer = services.customer_create(phone="+4915112345678", name="Ada Lovelace")
    call = services.call_start(protocol="twilio", external_id="MZ777", customer_id=customer.pk, agent_id=agent.pk)
    for index, text in enumerate(["I would like a refund", "for order 4711"]):
        segment = services.segment_create(
            call_id=call.pk, index=index, start_ms=index * 2000, end_ms=index * 2000 + 1500, sample_rate=8000
        )
        services.segment_store_result(segment_id=segment.pk, text=text, words=[], confidence=0.8)
    model = services.model_version_register(name="base-1", checkpoint="a.pt", sha256="f" * 64)
    services.voice_profile_create(customer_id=customer.pk, model_version_id=model.pk, state=b"\x00" * 64)
    return call


@pytest.mark.parametrize(
    ("model", "query", "expected"),
    [
        ("customer", "q=%2B4915112345678", "Ada Lovelace"),
        ("call", "q=MZ777", "MZ777"),
        ("call", "q=%2B4915112345678&status__exact=live&protocol__exact=twilio", "MZ777"),
        ("segment", "q=refund", "I would like a refund"),
        ("segment", "q=MZ777&verified=no&status__exact=recognized", "for order 4711"),
        ("agent", "q=agent1", "Jo"),
        ("modelversion", "is_active__exact=0", "base-1"),
        ("voiceprofile", "q=%2B4915112345678", "64"),
    ],
)
def test_changelist_search_and_filters_find_the_row(admin_client, call_with_transcript, model, query, expected):
    response = admin_client.get(reverse(f"admin:calls_{model}_changelist") + "?" + query)

    assert response.status_code == 200
    assert expected in response.content.decode()
    assert "0 results" not in response.content.decode()


def test_call_page_shows_the_transcript_in_order(admin_client, call_with_transcript):
    response = admin_client.get(reverse("admin:calls_call_change", args=[call_with_transcript.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert page.index("I would like a refund") < page.index("for order 4711")


def test_admin_requires_a_login(client):
    response = client.get(reverse("admin:calls_call_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]

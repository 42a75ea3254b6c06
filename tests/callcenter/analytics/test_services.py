"""Analytics stored for a call, categories raised by finals, the export (command
and supervisors' URL) and the admin's rule form, on the real database."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.urls import reverse

from callcenter.analytics import services
from callcenter.analytics.models import CallAnalytics, CallCategory, CategoryRule
from callcenter.analytics.rules import InvalidRule
from callcenter.calls.models import Call, Segment
from callcenter.errors import InvalidInput, NotFound

pytestmark = pytest.mark.django_db


def _words(text: str, start_s: float = 0.2) -> list[dict]:
    return [{"w": w, "start": start_s + 0.3 * i, "end": start_s + 0.3 * i + 0.25, "conf": 0.9}
            for i, w in enumerate(text.split())]  # fmt: skip


def _call(*, ended: bool = True, seconds: int = 15) -> Call:
    started = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)
    return Call.objects.create(
        protocol="twilio", external_id="", started_at=started, status="ended" if ended else "live",
        ended_at=started + dt.timedelta(seconds=seconds) if ended else None,
    )  # fmt: skip


def _segment(call: Call, index: int, speaker: str, start_ms: int, end_ms: int, text: str, *, status="recognized",
             speech=None) -> Segment:  # fmt: skip
    return Segment.objects.create(
        call=call, index=index, speaker=speaker, start_ms=start_ms, end_ms=end_ms, text=text,
        words=_words(text) if status == "recognized" else [], status=status,
        speech_start_ms=speech[0] if speech else None, speech_end_ms=speech[1] if speech else None,
    )  # fmt: skip


def _two_party_call() -> Call:
    call = _call(seconds=15)
    _segment(call, 0, "agent", 300, 3300, "thank you for calling how can I help", speech=(500, 3000))
    _segment(call, 1, "customer", 3800, 9300, "this is terrible I want to cancel my account", speech=(4000, 9000))
    _segment(call, 2, "agent", 8000, 11300, "I am sorry let me help you with that", speech=(8200, 11000))
    _segment(call, 3, "customer", 12800, 14300, "thanks", speech=(13000, 14000))
    return call


def test_the_analytics_of_an_ended_call_are_stored_from_the_voiced_parts_of_its_segments():
    call = _two_party_call()
    analytics = services.analytics_compute(call_id=call.pk)

    stored = CallAnalytics.objects.get(call=call)
    assert stored.pk == analytics.pk
    assert (stored.talk_ms_customer, stored.talk_ms_agent) == (6000, 5300)
    assert stored.overlap_ms == 800 and stored.interruptions_agent == 1 and stored.interruptions_customer == 0
    assert stored.silence_ms == 4500 and stored.longest_silence_ms == 2000 and stored.duration_ms == 15000
    assert stored.sentiment_customer < 0 < stored.sentiment_agent
    assert stored.wpm_agent == round(17 * 60000 / 5300, 1)
    # Computing again overwrites: one row per call.
    services.analytics_compute(call_id=call.pk)
    assert CallAnalytics.objects.filter(call=call).count() == 1


def test_a_pending_segment_counts_as_talk_without_words_and_a_missing_call_is_not_found():
    call = _call(seconds=5)
    _segment(call, 0, "customer", 0, 2000, "", status="pending")
    analytics = services.analytics_compute(call_id=call.pk)
    assert analytics.talk_ms_customer == 2000 and analytics.wpm_customer == 0.0
    with pytest.raises(NotFound):
        services.analytics_compute(call_id=call.pk + 1000)


def test_a_final_raises_a_category_once_and_only_for_its_party():
    rule = services.category_rule_create(name="Cancellation", phrases="cancel my account", party="customer")
    services.category_rule_create(name="Agent says cancel", phrases="cancel", party="agent")
    call = _call(ended=False)
    first = _segment(call, 0, "customer", 0, 3000, "please cancel my account now")
    raised = services.categories_match_segment(segment_id=first.pk)

    assert [c.rule.name for c in raised] == ["Cancellation"]
    alert = services.alert_message(raised[0])
    assert alert == {"type": "alert", "call": call.pk, "category": "Cancellation", "description": "", "match": "any",
                     "speaker": "customer", "segment": first.pk, "text": "cancel my account", "at_ms": 500}  # fmt: skip
    again = _segment(call, 1, "customer", 4000, 6000, "cancel my account I said")
    assert services.categories_match_segment(segment_id=again.pk) == []
    assert services.categories_match_segment(segment_id=first.pk) == []
    assert CallCategory.objects.get(call=call).rule == rule


def test_no_greeting_from_the_agent_in_the_first_ten_seconds_is_raised_once_the_window_has_passed():
    services.category_rule_create(
        name="No greeting", phrases="thank you for calling\nhello\ngood morning", match="absent", party="agent",
        window_end_s=10,
    )  # fmt: skip
    call = _call(ended=False)
    early = _segment(call, 0, "customer", 1000, 3000, "hello is anyone there")  # the customer's hello does not count
    assert services.categories_match_segment(segment_id=early.pk) == []  # the window is still open
    late = _segment(call, 1, "agent", 12000, 14000, "yes what do you want")
    raised = services.categories_match_segment(segment_id=late.pk)
    assert [(c.rule.name, c.at_ms, c.segment_id) for c in raised] == [("No greeting", 10000, None)]


def test_a_greeting_in_the_window_keeps_the_absent_rule_quiet_to_the_end_of_the_call():
    services.category_rule_create(name="No greeting", phrases="thank you for calling", match="absent", party="agent",
                                  window_end_s=10)  # fmt: skip
    call = _two_party_call()
    assert services.categories_finish_call(call_id=call.pk) == []


def test_a_rule_that_does_not_compile_is_refused_and_nothing_is_stored():
    services.category_rule_create(name="Kept", phrases="refund")
    with pytest.raises(InvalidRule, match="not a valid regular expression"):
        services.category_rule_create(name="Broken", phrases="re:(refund")
    with pytest.raises(InvalidInput, match="already exists"):
        services.category_rule_create(name="Kept", phrases="other")
    assert list(CategoryRule.objects.values_list("name", "phrases")) == [("Kept", "refund")]


def test_a_stored_rule_that_no_longer_compiles_is_skipped_and_the_others_still_match(caplog):
    services.category_rule_create(name="Refund", phrases="refund")
    CategoryRule.objects.create(name="Broken", phrases="re:(x")  # around the admin's check
    call = _call(ended=False)
    segment = _segment(call, 0, "customer", 0, 2000, "I want a refund")
    raised = services.categories_match_segment(segment_id=segment.pk)
    assert [c.rule.name for c in raised] == ["Refund"]
    assert "category rule" in caplog.text and "not a valid regular expression" in caplog.text


def test_export_call_prints_segments_and_analytics_as_json_and_csv():
    services.category_rule_create(name="Cancellation", phrases="cancel my account", party="customer")
    call = _two_party_call()
    services.call_finish_analytics(call_id=call.pk)

    out = io.StringIO()
    call_command("export_call", str(call.pk), stdout=out)
    data = json.loads(out.getvalue())
    assert [s["speaker"] for s in data["segments"]] == ["agent", "customer", "agent", "customer"]
    assert set(data["segments"][0]) >= {"speaker", "start_ms", "end_ms", "text", "words"}
    a = data["analytics"]
    assert a["talk_ms"] == {"customer": 6000, "agent": 5300} and a["overlap_ms"] == 800
    assert a["interruptions"] == {"customer": 0, "agent": 1} and a["categories"] == ["Cancellation"]
    assert set(a) >= {"silence_ms", "longest_silence_ms", "words_per_minute", "sentiment"}

    out = io.StringIO()
    call_command("export_call", str(call.pk), "--format", "csv", stdout=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["speaker"] for r in rows if r["kind"] == "segment"] == ["agent", "customer", "agent", "customer"]
    assert {(r["metric"], r["speaker"], r["value"]) for r in rows if r["kind"] == "analytics"} >= {
        ("talk_ms", "customer", "6000"), ("overlap_ms", "", "800"), ("interruptions", "agent", "1")}
    assert [r["value"] for r in rows if r["kind"] == "category"] == ["Cancellation"]


def test_export_call_refuses_a_call_that_does_not_exist_and_a_bad_format():
    with pytest.raises(CommandError, match="does not exist"):
        call_command("export_call", "999999")
    with pytest.raises(CommandError):
        call_command("export_call", "1", "--format", "xml")


def test_the_supervisors_url_serves_the_export_to_supervisors_only(client):
    call = _two_party_call()
    services.analytics_compute(call_id=call.pk)
    url = reverse("analytics:call_export", args=[call.pk])

    assert client.get(url).status_code == 401
    User.objects.create_user("nobody", password="pw")
    client.login(username="nobody", password="pw")
    assert client.get(url).status_code == 403

    supervisor = User.objects.create_user("sup", password="pw")
    supervisor.user_permissions.add(Permission.objects.get(codename="view_call"))
    client.login(username="sup", password="pw")
    response = client.get(url)
    assert response.status_code == 200
    assert response.json()["analytics"]["talk_ms"] == {"customer": 6000, "agent": 5300}
    assert client.get(reverse("analytics:call_export", args=["12x"])).status_code == 400
    assert client.get(reverse("analytics:call_export", args=[call.pk + 999])).status_code == 404
    assert client.post(url).status_code == 405


def test_the_admin_refuses_a_rule_that_does_not_compile_and_draws_a_call_s_analytics(admin_client):
    response = admin_client.post(reverse("admin:analytics_categoryrule_add"), {
        "name": "Broken", "phrases": "re:(cancel", "match": "any", "party": "customer", "alert": "on", "enabled": "on",
    })  # fmt: skip
    assert response.status_code == 200 and "not a valid regular expression" in response.content.decode()
    assert not CategoryRule.objects.exists()

    call = _two_party_call()
    analytics = services.analytics_compute(call_id=call.pk)
    page = admin_client.get(reverse("admin:analytics_callanalytics_change", args=[analytics.pk])).content.decode()
    assert 'class="talk-bar"' in page and 'class="call-timeline"' in page and "both at once: 0.8 s" in page


def test_the_call_s_admin_page_shows_its_analytics_pictures_and_each_segment_s_speaker(admin_client):
    call = _two_party_call()
    url = reverse("admin:calls_call_change", args=[call.pk])
    assert "Not computed yet" in admin_client.get(url).content.decode()

    services.analytics_compute(call_id=call.pk)
    page = admin_client.get(url).content.decode()
    assert 'class="talk-bar"' in page and 'class="call-timeline"' in page
    assert "overlap 8.2 s–9.0 s (0.8 s)" in page and "customer" in page and "agent" in page


def test_a_stored_final_queues_its_category_matching_and_an_ended_call_its_analytics_after_commit(
    django_capture_on_commit_callbacks, shared_var_dir
):
    from callcenter.calls import services as call_services
    from callcenter.calls.services.enqueue import analytics_call_enqueue, analytics_final_enqueue

    call = call_services.call_start(protocol="pcm")
    segment = call_services.segment_create(call_id=call.pk, index=0, start_ms=0, end_ms=0, sample_rate=8000,
                                           speaker="agent")  # fmt: skip
    with django_capture_on_commit_callbacks() as callbacks:
        call_services.segment_store_result(segment_id=segment.pk, text="hello", words=[], confidence=0.9)
        call_services.call_end(call_id=call.pk)
        call_services.call_end(call_id=call.pk)  # ended already: nothing more
    assert [(c.func, c.keywords) for c in callbacks] == [
        (analytics_final_enqueue, {"segment_id": segment.pk}), (analytics_call_enqueue, {"call_id": call.pk})]

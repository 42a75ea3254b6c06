"""The admin as a supervisor uses it: review a call, listen, correct and
verify, bulk actions, re-adapt, forget, model versions; permissions."""

from __future__ import annotations

import os
import shutil

import pytest
from django.contrib.auth.models import Permission
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from asr_core.small.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from callcenter.calls import services
from callcenter.calls.models import AdaptationRun, Customer, ModelVersion, Segment

pytestmark = pytest.mark.django_db

WORDS = [
    {"w": "i", "start": 0.1, "end": 0.2, "conf": 0.95},
    {"w": "want", "start": 0.2, "end": 0.4, "conf": 0.31},
    {"w": "a", "start": 0.4, "end": 0.5, "conf": 0.9},
    {"w": "refund", "start": 0.5, "end": 0.9, "conf": 0.88},
]


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def call(media):
    customer = services.customer_create(phone="+4915112345678", name="Ada Lovelace")
    call = services.call_start(protocol="twilio", external_id="MZ900", customer_id=customer.pk)
    for index, (text, words) in enumerate([("i want a refund", WORDS), ("for order forty two", [])]):
        segment = services.segment_create(
            call_id=call.pk, index=index, start_ms=index * 2000, end_ms=index * 2000 + 1500, sample_rate=8000,
            audio=b"RIFF----WAVEfmt " + bytes([index]) * 32,
        )  # fmt: skip
        services.segment_store_result(segment_id=segment.pk, text=text, words=words, confidence=0.8)
    return call


def _staff(django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
    base = ["view_call", "change_call", "view_segment", "change_segment", "view_customer", "view_modelversion"]
    user.user_permissions.add(*Permission.objects.filter(codename__in=[*base, *codenames]))
    return user


@pytest.fixture
def supervisor_client(client, django_user_model):
    client.force_login(
        _staff(django_user_model, "supervisor", "verify_segment", "rerecognize_segment", "adapt_customer",
               "forget_customer", "promote_modelversion")  # fmt: skip
    )
    return client


@pytest.fixture
def clerk_client(client, django_user_model):
    client.force_login(_staff(django_user_model, "clerk"))
    return client


def _inline_post(call, segments, **changes) -> dict:
    """The call page's form as the browser posts it, with ``changes`` per segment index."""
    data = {
        "customer": call.customer_id, "agent": "", "line": "", "direction": call.direction, "protocol": call.protocol,
        "external_id": call.external_id, "status": call.status, "started_at_0": call.started_at.strftime("%Y-%m-%d"),
        "started_at_1": call.started_at.strftime("%H:%M:%S"), "ended_at_0": "", "ended_at_1": "",
        "failure_reason": "",
        "segments-TOTAL_FORMS": len(segments), "segments-INITIAL_FORMS": len(segments),
        "segments-MIN_NUM_FORMS": 0, "segments-MAX_NUM_FORMS": 1000,
    }  # fmt: skip
    for i, segment in enumerate(segments):
        data[f"segments-{i}-id"] = segment.pk
        data[f"segments-{i}-call"] = call.pk
        data[f"segments-{i}-verified_text"] = segment.verified_text
        for key, value in changes.get(f"s{segment.index}", {}).items():
            data[f"segments-{i}-{key}"] = value
    return data


def test_the_call_page_plays_each_segment_and_marks_low_confidence_words(supervisor_client, call):
    page = supervisor_client.get(reverse("admin:calls_call_change", args=[call.pk])).content.decode()

    segments = list(Segment.objects.filter(call=call).order_by("index"))
    for segment in segments:
        assert f'<audio controls preload="none" src="/calls/segments/{segment.pk}/audio">' in page
    assert '<mark title="confidence 0.31">want</mark>' in page and "<mark" not in page.split("want</mark>")[1][:60]
    assert page.index("refund") < page.index("for order forty two")


def test_a_supervisor_corrects_and_verifies_on_the_call_page_and_who_and_when_is_recorded(supervisor_client, call):
    segments = list(Segment.objects.filter(call=call).order_by("index"))

    response = supervisor_client.post(
        reverse("admin:calls_call_change", args=[call.pk]),
        _inline_post(call, segments, s0={"verified_text": "i want a refund please"}, s1={"mark_verified": "on"}),
        follow=True,
    )

    assert response.status_code == 200, response.content.decode()[:2000]
    first, second = Segment.objects.filter(call=call).order_by("index")
    assert first.verified_text == "i want a refund please" and first.verified_by.username == "supervisor"
    assert second.verified_text == "for order forty two" and second.verified_at is not None


def test_verifying_with_empty_text_is_refused_with_a_clear_message_and_nothing_changes(supervisor_client, call):
    first = Segment.objects.get(call=call, index=0)
    services.segment_verify(segment_id=first.pk, text="i want a refund", user=_supervisor_user())

    response = supervisor_client.post(
        reverse("admin:calls_segment_change", args=[first.pk]), {"verified_text": "   ", "mark_verified": "on"}
    )

    assert response.status_code == 200  # the form again, with the error
    assert "A verified transcript cannot be empty" in response.content.decode()
    first.refresh_from_db()
    assert first.verified_text == "i want a refund"


@pytest.mark.parametrize(
    ("text", "shown", "not_shown"),
    [
        ("x" * 10_001, "A verified transcript is at most 10000 characters", "was changed successfully"),
        ("i want\x00 a refund", "Null characters are not allowed", "cannot be empty"),
    ],
)
def test_a_transcript_too_long_or_with_a_nul_gets_one_clear_error_and_nothing_changes(
    supervisor_client, call, text, shown, not_shown
):
    first = Segment.objects.get(call=call, index=0)
    services.segment_verify(segment_id=first.pk, text="i want a refund", user=_supervisor_user())

    response = supervisor_client.post(
        reverse("admin:calls_segment_change", args=[first.pk]), {"verified_text": text}, follow=True
    )

    body = response.content.decode()
    assert response.status_code == 200 and shown in body and not_shown not in body
    first.refresh_from_db()
    assert first.verified_text == "i want a refund"


def _supervisor_user():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="supervisor")


def test_bulk_mark_verified_from_the_calls_list(supervisor_client, call):
    response = supervisor_client.post(
        reverse("admin:calls_call_changelist"), {"action": "mark_verified", "_selected_action": [call.pk]}, follow=True
    )

    assert "2 segment(s) marked verified" in response.content.decode()
    assert not Segment.objects.filter(call=call, verified_at__isnull=True).exists()
    listing = supervisor_client.get(reverse("admin:calls_call_changelist") + "?unverified=yes").content.decode()
    assert "0 calls" in listing or "MZ900" not in listing


def test_the_unverified_filter_and_search_find_the_call(supervisor_client, call):
    page = supervisor_client.get(
        reverse("admin:calls_call_changelist") + "?unverified=yes&q=%2B4915112345678&status__exact=live"
    ).content.decode()
    assert "MZ900" in page


def test_staff_without_the_permission_cannot_verify_or_adapt(clerk_client, call):
    page = clerk_client.get(reverse("admin:calls_call_changelist")).content.decode()
    assert "mark_verified" not in page and "adapt_callers" not in page

    response = clerk_client.post(
        reverse("admin:calls_call_changelist"), {"action": "mark_verified", "_selected_action": [call.pk]}
    )

    assert response.status_code in (200, 302)
    assert not Segment.objects.filter(call=call, verified_at__isnull=False).exists()
    segment = Segment.objects.get(call=call, index=0)
    assert clerk_client.post(
        reverse("admin:calls_segment_change", args=[segment.pk]), {"verified_text": "hacked"}
    ).status_code == 403


def test_segment_audio_is_served_only_to_staff_who_may_view_segments(call, django_user_model):
    segment = Segment.objects.get(call=call, index=0)
    url = reverse("calls:segment_audio", args=[segment.pk])
    clerk, anonymous, nobody = Client(), Client(), Client()
    clerk.force_login(_staff(django_user_model, "clerk"))
    nobody.force_login(django_user_model.objects.create_user("nobody", is_staff=True))

    response = clerk.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "audio/x-wav"
    assert b"".join(response.streaming_content) == default_storage.open(segment.audio.name).read()
    assert anonymous.get(url).status_code == 302  # to the login
    assert nobody.get(url).status_code == 403
    assert clerk.get(reverse("calls:segment_audio", args=[999999])).status_code == 404


def test_re_adapt_queues_an_adaptation_and_a_caller_without_audio_gets_a_clear_message(supervisor_client, call):
    silent = services.customer_create(phone="+4915100000000")

    response = supervisor_client.post(
        reverse("admin:calls_customer_changelist"),
        {"action": "adapt_callers", "_selected_action": [call.customer_id, silent.pk]},
        follow=True,
    )

    page = response.content.decode()
    assert f"Customer #{call.customer_id}: adaptation #" in page and "queued" in page
    assert f"customer #{silent.pk} has no stored audio: there is nothing to adapt on" in page
    assert list(AdaptationRun.objects.values_list("customer_id", flat=True)) == [call.customer_id]


def test_the_customer_page_shows_profile_versions_and_accuracy_history(supervisor_client, call):
    version = services.model_version_ensure_active(checkpoint="base.pt", sha256="b" * 64)
    run = services.adaptation_request(customer_id=call.customer_id)
    services.adaptation_run_finish(
        run_id=run.pk, model_version_id=version.pk, mode="supervised", accepted=True,
        metrics={"wer_before": 0.25, "wer_after": 0.2, "utterances": 2, "seconds": 1.5}, state=b"x",
        expected_version=None,
    )  # fmt: skip

    page = supervisor_client.get(reverse("admin:calls_customer_change", args=[call.customer_id])).content.decode()

    assert "WER 0.25 → 0.2" in page and "-20 %" in page and "profile for the active model: v1" in page
    assert "shipped-bbbbbbbbbbbb" in page


def test_forget_asks_for_confirmation_then_deletes_the_callers_files(
    supervisor_client, call, django_capture_on_commit_callbacks
):
    paths = [default_storage.path(s.audio.name) for s in Segment.objects.filter(call=call)]
    services.call_end(call_id=call.pk)
    changelist = reverse("admin:calls_customer_changelist")

    ask = supervisor_client.post(changelist, {"action": "forget_callers", "_selected_action": [call.customer_id]})
    assert "Forget these callers?" in ask.content.decode() and Customer.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        done = supervisor_client.post(
            changelist,
            {"action": "forget_callers", "_selected_action": [call.customer_id], "confirm": "yes"},
            follow=True,
        )

    assert "forgotten: 1 call(s), 2 segment(s), 2 audio file(s), 0 profile(s) deleted" in done.content.decode()
    assert not Customer.objects.exists() and not Segment.objects.exists()
    assert not any(os.path.exists(p) for p in paths)


@pytest.fixture
def versions(tmp_path):
    shipped = tmp_path / "shipped.pt"
    shutil.copy(DEFAULT_CHECKPOINT, shipped)
    sha = load_checkpoint(str(shipped))[1]["sha256"]
    v1 = services.model_version_register(name="v1", checkpoint=str(shipped), sha256=sha)
    services.model_version_promote(model_version_id=v1.pk)
    v2 = services.model_version_register(name="v2", checkpoint=str(tmp_path / "missing.pt"), sha256=sha)
    return v1, v2


def test_promoting_a_version_whose_checkpoint_is_missing_shows_why_and_changes_nothing(supervisor_client, versions):
    v1, v2 = versions

    response = supervisor_client.post(
        reverse("admin:calls_modelversion_changelist"), {"action": "promote", "_selected_action": [v2.pk]}, follow=True
    )

    assert "its checkpoint file" in response.content.decode() and "is missing; nothing was changed" in (
        response.content.decode()
    )
    assert ModelVersion.objects.get(is_active=True).pk == v1.pk


def test_roll_back_from_the_model_versions_page(supervisor_client, versions, tmp_path):
    v1, _v2 = versions
    copy = tmp_path / "v3.pt"
    shutil.copy(v1.checkpoint, copy)
    v3 = services.model_version_create_promoted(
        name="v3", checkpoint=str(copy), sha256=v1.sha256, parent_id=v1.pk, metrics={"current_wer": 0.2, "candidate_wer": 0.15}
    )
    listing = supervisor_client.get(reverse("admin:calls_modelversion_changelist")).content.decode()
    assert "0.15" in listing and "0.2" in listing

    response = supervisor_client.post(
        reverse("admin:calls_modelversion_changelist"), {"action": "roll_back", "_selected_action": [v3.pk]}, follow=True
    )

    assert "Rolled back: v1 is active again" in response.content.decode()
    assert ModelVersion.objects.get(is_active=True).pk == v1.pk


def test_the_call_page_has_buttons_that_run_the_actions_on_this_call(supervisor_client, call):
    page = supervisor_client.get(reverse("admin:calls_call_change", args=[call.pk])).content.decode()
    for action in ("mark_verified", "recognize_again", "adapt_callers"):
        assert f'name="action" value="{action}"' in page
    assert f'action="{reverse("admin:calls_call_changelist")}"' in page

    response = supervisor_client.post(
        reverse("admin:calls_call_changelist"), {"action": "adapt_callers", "_selected_action": call.pk}, follow=True
    )

    assert f"Customer #{call.customer_id}: adaptation #" in response.content.decode()

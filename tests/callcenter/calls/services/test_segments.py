"""Segments: stored with their audio, their result, failure and verification."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from callcenter.calls import selectors, services
from callcenter.calls.models import Call, Segment
from callcenter.errors import DuplicateSegment, InvalidInput, NotFound


@pytest.fixture
def live_call() -> Call:
    return services.call_start(protocol="pcm", external_id="s1")


@pytest.mark.django_db
def test_segment_create_stores_the_audio_file(live_call, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)

    segment = services.segment_create(
        call_id=live_call.pk, index=0, start_ms=120, end_ms=1880, sample_rate=8000, audio=b"RIFF....WAVE"
    )

    assert segment.status == "pending"
    assert segment.audio.name.startswith("segments/") and segment.audio.name.endswith(f"call{live_call.pk}-seg0.wav")
    assert (tmp_path / segment.audio.name).read_bytes() == b"RIFF....WAVE"
    assert list(selectors.call_segments(call_id=live_call.pk)) == [segment]


@pytest.mark.django_db
def test_segment_create_refuses_duplicates_and_bad_times(live_call):
    services.segment_create(call_id=live_call.pk, index=0, start_ms=0, end_ms=10, sample_rate=8000)
    with pytest.raises(DuplicateSegment, match="already has segment 0"):
        services.segment_create(call_id=live_call.pk, index=0, start_ms=20, end_ms=30, sample_rate=8000)
    with pytest.raises(InvalidInput, match="0 <= start_ms <= end_ms"):
        services.segment_create(call_id=live_call.pk, index=1, start_ms=30, end_ms=20, sample_rate=8000)
    with pytest.raises(NotFound):
        services.segment_create(call_id=999999, index=0, start_ms=0, end_ms=10, sample_rate=8000)


@pytest.mark.django_db
def test_segment_result_failure_and_verification(live_call, django_user_model):
    segment = services.segment_create(call_id=live_call.pk, index=0, start_ms=0, end_ms=900, sample_rate=8000)
    words = [{"w": "hello", "start": 0.1, "end": 0.4, "conf": 0.9}]

    stored = services.segment_store_result(segment_id=segment.pk, text=" hello ", words=words, confidence=0.9)
    stored_twice = services.segment_store_result(segment_id=segment.pk, text="hello", words=words, confidence=0.9)
    assert (stored_twice.status, stored_twice.text, stored_twice.words) == ("recognized", "hello", words)
    assert Segment.objects.count() == 1 and stored.pk == stored_twice.pk

    with pytest.raises(InvalidInput, match="word 0 needs w, start, end and conf"):
        services.segment_store_result(segment_id=segment.pk, text="x", words=[{"w": "x"}], confidence=None)

    # the search's score of the text and the key it is comparable under; a bad score is refused
    # and the stored result stays as it was
    scored = services.segment_store_result(segment_id=segment.pk, text="hello", words=words, confidence=0.9,
                                           avg_logprob=-0.25, scored_by="k" * 32)
    assert (scored.avg_logprob, scored.scored_by) == (-0.25, "k" * 32)
    for bad in (0.5, float("nan"), float("-inf"), "-0.2", False):
        with pytest.raises(InvalidInput, match="avg_logprob must be a finite log-probability"):
            services.segment_store_result(segment_id=segment.pk, text="other", words=[], confidence=0.1,
                                          avg_logprob=bad, scored_by="k")
    with pytest.raises(InvalidInput, match="scored_by is too long"):
        services.segment_store_result(segment_id=segment.pk, text="other", words=[], confidence=0.1,
                                      avg_logprob=-0.1, scored_by="k" * 33)
    kept = Segment.objects.get(pk=segment.pk)
    assert (kept.text, kept.avg_logprob, kept.scored_by) == ("hello", -0.25, "k" * 32)
    # a score without its key is no score; storing without one clears the old
    unkeyed = services.segment_store_result(segment_id=segment.pk, text="hello", words=words, confidence=0.9,
                                            avg_logprob=-0.25)
    assert (unkeyed.avg_logprob, unkeyed.scored_by) == (None, "")

    reviewer = django_user_model.objects.create_user("qa")
    reviewer.user_permissions.add(Permission.objects.get(codename="verify_segment"))
    verified = services.segment_verify(segment_id=segment.pk, text="hello there", user=reviewer)
    assert verified.best_text == "hello there" and verified.verified_by == reviewer

    failed = services.segment_mark_failed(segment_id=segment.pk, reason="decoder crashed")
    assert (failed.status, failed.failure_reason) == ("failed", "decoder crashed")

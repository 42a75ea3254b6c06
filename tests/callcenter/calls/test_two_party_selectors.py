"""Two-party calls: only the customer's own segments feed the customer's voice profile, history
and meta-training; an agent's voice never does."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from callcenter.calls import selectors, services
from callcenter.calls.models import Segment
from callcenter.errors import AdaptationFailed, InvalidInput

pytestmark = pytest.mark.django_db


def _segment(call, index: int, speaker: str, *, verified: bool = False) -> Segment:
    segment = services.segment_create(call_id=call.pk, index=index, start_ms=1000 * index, end_ms=1000 * index + 800,
                                      sample_rate=8000, speaker=speaker)  # fmt: skip
    segment.audio.save(f"two-party-{call.pk}-{index}.wav", ContentFile(b"RIFF"), save=False)
    if verified:
        segment.verified_text, segment.verified_at = "hello there", timezone.now()
    segment.status = "recognized"
    segment.save()
    return segment


@pytest.fixture
def two_party_call(shared_var_dir):
    customer = services.customer_create(phone="+15550103001")
    call = services.call_start(protocol="twilio", customer_id=customer.pk)
    customer_segments = [_segment(call, 0, "customer", verified=True), _segment(call, 2, "customer")]
    agent_segments = [_segment(call, 1, "agent", verified=True), _segment(call, 3, "agent")]
    return customer, customer_segments, agent_segments


def test_the_customers_adaptation_history_and_meta_training_see_only_the_customers_track(two_party_call):
    customer, customer_segments, _agent = two_party_call

    chosen = selectors.customer_adaptation_segments(customer_id=customer.pk, limit=10)
    assert [s.pk for s in chosen] == [s.pk for s in customer_segments]
    assert selectors.customer_history(customer_id=customer.pk).segments == 2
    assert list(selectors.verified_segments_since(since=None)) == [customer_segments[0]]


def test_a_customer_whose_call_has_only_the_agent_s_audio_cannot_be_adapted(shared_var_dir):
    customer = services.customer_create(phone="+15550103002")
    call = services.call_start(protocol="twilio", customer_id=customer.pk)
    _segment(call, 0, "agent")
    with pytest.raises(AdaptationFailed, match="no stored audio"):
        services.adaptation_request(customer_id=customer.pk, trigger="manual")


def test_a_segment_needs_a_known_speaker_and_its_voiced_part_inside_it(shared_var_dir):
    call = services.call_start(protocol="pcm")
    with pytest.raises(InvalidInput, match="speaker must be one of"):
        services.segment_create(call_id=call.pk, index=0, start_ms=0, end_ms=0, sample_rate=8000, speaker="caller")
    segment = services.segment_create(call_id=call.pk, index=0, start_ms=1000, end_ms=1000, sample_rate=8000)
    with pytest.raises(InvalidInput, match="must lie within the segment"):
        services.segment_finish(segment_id=segment.pk, end_ms=3000, audio=b"RIFF", speech_start_ms=900,
                                speech_end_ms=2000)  # fmt: skip
    segment.refresh_from_db()
    assert not segment.audio and segment.speaker == "customer"


def test_a_call_stores_the_line_s_vocabulary_then_the_stream_s(shared_var_dir):
    line, _token = services.line_create(name="vocab-line", vocabulary="Zentrix\nFlexPay, Zentrix")
    call = services.call_start(protocol="pcm", line_id=line.pk, vocabulary=["Velmora", "flexpay", "  Velmora "],
                               started_at=timezone.now() - dt.timedelta(seconds=1))  # fmt: skip
    assert call.vocabulary == ["Zentrix", "FlexPay", "Velmora", "flexpay"]

"""The sweeper's rules (``services.maintenance_sweep``), with the real
database and Redis (the web processes' liveness keys)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from callcenter.asr import wav_bytes
from callcenter.calls import services
from callcenter.calls.models import Call, Segment
from callcenter.errors import InvalidInput
from callcenter.ops import redisconn
from callcenter.tools.demo import synthetic_call

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    return wav_bytes(synthetic_call(seed=3, sentences=1).audio, 8000)


def _segment(call: Call, index: int, audio: bytes = b"", *, status: str = "pending", age_s: float = 0) -> Segment:
    segment = services.segment_create(call_id=call.pk, index=index, start_ms=index * 3000, end_ms=index * 3000 + 2000,
                                      sample_rate=8000, audio=audio)  # fmt: skip
    Segment.objects.filter(pk=segment.pk).update(status=status, updated=timezone.now() - dt.timedelta(seconds=age_s))
    return segment


def test_the_sweeper_closes_live_calls_no_web_process_holds(speech_wav):
    orphan = services.call_start(protocol="twilio", external_id="MZorphan",
                                 started_at=timezone.now() - dt.timedelta(minutes=5))  # fmt: skip
    held = services.call_start(protocol="twilio", external_id="MZheld",
                               started_at=timezone.now() - dt.timedelta(minutes=5))  # fmt: skip
    young = services.call_start(protocol="pcm")  # its web process has not renewed its key yet
    kept = _segment(orphan, 0, speech_wav)
    lost = _segment(orphan, 1)  # opened at speech onset; its audio died with the process
    redisconn.calls_alive_renew(call_ids=[held.pk], owner="test:1", ttl_s=30)

    result = services.maintenance_sweep(stuck_after_s=60, heartbeat_s=1)

    assert result["calls_closed"] == [orphan.pk]
    orphan.refresh_from_db()
    assert orphan.status == "failed" and "web process stopped" in orphan.failure_reason and orphan.ended_at
    assert Call.objects.get(pk=held.pk).status == "live" and Call.objects.get(pk=young.pk).status == "live"
    assert Segment.objects.get(pk=kept.pk).status == "pending"  # kept: it has audio
    lost = Segment.objects.get(pk=lost.pk)
    assert lost.status == "failed" and lost.failure_reason.startswith("no audio stored")
    assert services.maintenance_sweep(stuck_after_s=60, heartbeat_s=1)["calls_closed"] == []


def test_the_sweeper_fails_segments_without_audio_of_long_closed_calls():
    call = services.call_start(protocol="pcm", started_at=timezone.now() - dt.timedelta(minutes=10))
    services.call_end(call_id=call.pk, ended_at=timezone.now() - dt.timedelta(minutes=5))
    onset = _segment(call, 0)

    assert services.maintenance_sweep(stuck_after_s=60, heartbeat_s=1)["segments_failed"] == [1]
    onset.refresh_from_db()
    assert onset.status == "failed" and "ended before" in onset.failure_reason


@pytest.mark.parametrize(("stuck_after_s", "heartbeat_s"), [(-1, 1), (60, 0), (60, -5)])
def test_the_sweeper_refuses_bad_periods_and_changes_nothing(stuck_after_s, heartbeat_s):
    call = services.call_start(protocol="pcm", started_at=timezone.now() - dt.timedelta(minutes=10))
    services.call_end(call_id=call.pk, ended_at=timezone.now() - dt.timedelta(minutes=5))
    onset = _segment(call, 0)

    with pytest.raises(InvalidInput, match="the sweeper needs stuck_after_s >= 0 and heartbeat_s > 0"):
        services.maintenance_sweep(stuck_after_s=stuck_after_s, heartbeat_s=heartbeat_s)

    assert Segment.objects.get(pk=onset.pk).status == "pending"

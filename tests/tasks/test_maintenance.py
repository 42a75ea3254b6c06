"""The sweeper task (maintenance.sweep: its rules are tested in
tests/callcenter/calls/services/test_maintenance.py), the requeue_segments
command and the workers' metrics, with the real database, Redis and Celery
worker."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from callcenter.asr import wav_bytes
from callcenter.calls import services
from callcenter.calls.models import Call, Segment
from callcenter.tools.demo import synthetic_call
from tasks.maintenance import sweep

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    return wav_bytes(synthetic_call(seed=3, sentences=1).audio, 8000)


@pytest.fixture(autouse=True)
def sweeper_settings(settings, shared_var_dir):
    settings.SEGMENT_STUCK_AFTER_S = 60
    settings.STREAM_HEARTBEAT_S = 1


def _segment(call: Call, index: int, audio: bytes = b"", *, status: str = "pending", age_s: float = 0) -> Segment:
    segment = services.segment_create(call_id=call.pk, index=index, start_ms=index * 3000, end_ms=index * 3000 + 2000,
                                      sample_rate=8000, audio=audio)  # fmt: skip
    Segment.objects.filter(pk=segment.pk).update(status=status, updated=timezone.now() - dt.timedelta(seconds=age_s))
    return segment


def _wait_status(segment_id: int, status: str, timeout: float = 60) -> Segment:
    deadline = time.monotonic() + timeout
    while (segment := Segment.objects.get(pk=segment_id)).status != status and time.monotonic() < deadline:
        time.sleep(0.2)
    return segment


def test_the_sweeper_queues_stuck_segments_once_and_the_worker_recognizes_them(celery_worker, speech_wav):
    call = services.call_start(protocol="twilio", external_id="MZsweep")
    services.call_end(call_id=call.pk)
    stuck = _segment(call, 0, speech_wav, age_s=600)
    fresh = _segment(call, 1, speech_wav, age_s=5)  # its task may still be in the queue

    first = sweep()
    second = sweep()

    assert first["segments_requeued"] == [stuck.pk] and second["segments_requeued"] == []
    recognized = _wait_status(stuck.pk, "recognized")
    assert recognized.text and recognized.words
    # The fresh one was not queued again; the stuck one's task may still recognize it in its batch
    # (its own task would then find it done), so its status says nothing about the sweeper.


def test_requeue_segments_queues_failed_ones_of_a_call(celery_worker, speech_wav, capsys):
    call = services.call_start(protocol="pcm")
    failed = _segment(call, 0, speech_wav, status="failed")
    Segment.objects.filter(pk=failed.pk).update(failure_reason="worker lost")
    other = services.call_start(protocol="pcm")
    untouched = _segment(other, 0, speech_wav, status="failed")

    call_command("requeue_segments", "--status", "failed", "--call", str(call.pk))

    assert "1 segment(s) queued" in capsys.readouterr().out
    assert _wait_status(failed.pk, "recognized").text
    assert Segment.objects.get(pk=untouched.pk).status == "failed"


def test_requeue_segments_dry_run_changes_nothing(speech_wav, capsys):
    call = services.call_start(protocol="pcm")
    segment = _segment(call, 0, speech_wav, status="failed", age_s=100)
    _segment(call, 1)  # no audio: nothing to recognize

    call_command("requeue_segments", "--dry-run", "--older-than", "50")

    assert f"1 segment(s) would be queued: [{segment.pk}]" in capsys.readouterr().out
    assert Segment.objects.get(pk=segment.pk).status == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--call", "987654"], "call #987654 does not exist"),
        (["--older-than", "-1"], "--older-than must be seconds from 0 to 315360000"),
        (["--older-than", "nan"], "--older-than must be seconds from 0 to 315360000"),
        (["--older-than", "inf"], "--older-than must be seconds from 0 to 315360000"),
        (["--older-than", "1e11"], "--older-than must be seconds from 0 to 315360000"),
        (["--status", "recognized"], "invalid choice"),
        (["--call", "abc"], "invalid int value"),
    ],
)
def test_requeue_segments_refuses_bad_input_and_changes_nothing(speech_wav, args, message):
    call = services.call_start(protocol="pcm")
    segment = _segment(call, 0, speech_wav, status="failed")

    with pytest.raises(CommandError, match=message):
        call_command("requeue_segments", *args)

    assert Segment.objects.get(pk=segment.pk).status == "failed"


def _scrape(client) -> str:
    return client.get("/metrics").content.decode()


def _sample(text: str, name: str) -> float:
    import re

    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, flags=re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_every_workers_recognitions_reach_the_web_metrics(client, celery_worker, speech_wav):
    before = _scrape(client)
    call = services.call_start(protocol="pcm")
    segment = services.segment_create(call_id=call.pk, index=0, start_ms=0, end_ms=0, sample_rate=8000)
    services.segment_finish(segment_id=segment.pk, end_ms=2000, audio=speech_wav, endpoint_at=time.time())

    assert _wait_status(segment.pk, "recognized").text
    deadline = time.monotonic() + 10
    while (after := _scrape(client)) and _sample(after, "callcenter_recognition_latency_seconds_count") <= _sample(
        before, "callcenter_recognition_latency_seconds_count"
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    recognized = 'callcenter_recognitions_all_total{outcome="recognized"}'
    assert _sample(after, recognized) >= _sample(before, recognized) + 1
    assert _sample(after, "callcenter_recognition_latency_seconds_count") == _sample(
        before, "callcenter_recognition_latency_seconds_count") + 1  # fmt: skip
    assert _sample(after, 'callcenter_recognition_latency_seconds_bucket{le="+Inf"}') >= 1


def test_adaptation_runs_and_their_wer_deltas_reach_the_web_metrics(client):
    from tasks.maintenance import _record_task_metrics
    from tasks.adaptation import adapt_customer

    before = _scrape(client)
    # What the worker's task_postrun signal hands over when an adaptation run finishes.
    _record_task_metrics(sender=adapt_customer, kwargs={"run_id": 1},
                         retval={"run": 1, "status": "accepted", "metrics": {"wer_before": 0.3, "wer_after": 0.15}})
    _record_task_metrics(sender=adapt_customer, kwargs={"run_id": 2},
                         retval={"run": 2, "status": "rejected", "metrics": {"confidence_before": 0.8}})  # fmt: skip
    after = _scrape(client)

    for status in ("accepted", "rejected"):
        name = f'callcenter_adaptations_all_total{{outcome="{status}"}}'
        assert _sample(after, name) == _sample(before, name) + 1
    # (A histogram with negative buckets has no _count/_sum: +Inf is the count.)
    for le in ("-0.1", "+Inf"):  # -0.15 (better) falls in le=-0.1 and above
        name = f'callcenter_adaptation_wer_delta_all_bucket{{le="{le}"}}'
        assert _sample(after, name) == _sample(before, name) + 1
    name = 'callcenter_adaptation_wer_delta_all_bucket{le="-0.2"}'
    assert _sample(after, name) == _sample(before, name)

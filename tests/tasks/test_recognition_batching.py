"""recognition.segment batches waiting segments: a real worker, real Redis claims, the real
default recognizer."""

from __future__ import annotations

import pytest

from asr_core.manifest import read_manifest
from callcenter import asr
from callcenter.calls import services
from callcenter.calls.models import Segment
from callcenter.ops import redisconn
from tasks.recognition import CLAIM_KEY, recognize_segment

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def prompts(real_dev):
    rows = sorted(read_manifest(str(real_dev), ("test",)), key=lambda u: len(u.text))[20:23]
    return [(u.text, open(u.audio, "rb").read()) for u in rows]


def _waiting_segments(prompts) -> list[Segment]:
    customer = services.customer_create(phone="+15557770101")
    call = services.call_start(protocol="twilio", external_id="MZbatch1", customer_id=customer.pk)
    return [
        services.segment_create(call_id=call.pk, index=i, start_ms=3000 * i, end_ms=3000 * i + 2000,
                                sample_rate=8000, audio=asr.wav_bytes(asr.decode_audio(wav).numpy(), 8000))
        for i, (_, wav) in enumerate(prompts)
    ]


def test_one_task_recognizes_the_segments_waiting_beside_it(celery_worker, prompts):
    segments = _waiting_segments(prompts)

    first = recognize_segment.delay(segment_id=segments[0].pk, endpoint_at=None).get(timeout=TIMEOUT_S)

    assert first["status"] == "recognized"
    rec = asr.final_model_recognizer()   # the worker's backbone (the test stack's settings)
    for segment, (_, wav) in zip(segments, prompts):
        segment.refresh_from_db()
        assert segment.status == "recognized", segment.pk
        assert segment.text == asr.transcribe(rec, asr.decode_audio(wav), params=None)["text"]   # as alone
    # The batch-mates' own tasks find their results and do nothing again.
    later = [recognize_segment.delay(segment_id=s.pk, endpoint_at=None).get(timeout=TIMEOUT_S) for s in segments[1:]]
    assert [r["status"] for r in later] == ["recognized", "recognized"]
    assert not any(redisconn.client().exists(CLAIM_KEY + str(s.pk)) for s in segments)


def test_a_segment_claimed_by_another_task_is_left_to_it(celery_worker, prompts):
    segments = _waiting_segments(prompts[:1])
    redisconn.client().set(CLAIM_KEY + str(segments[0].pk), "another-task", ex=60)
    try:
        result = recognize_segment.delay(segment_id=segments[0].pk, endpoint_at=None).get(timeout=TIMEOUT_S)
    finally:
        redisconn.client().delete(CLAIM_KEY + str(segments[0].pk))
    assert result["status"] == "batched"
    segments[0].refresh_from_db()
    assert segments[0].status == "pending"   # still its claimer's, or the sweeper's once the claim expires


def test_a_batch_mate_with_unreadable_audio_fails_alone(celery_worker, prompts):
    segments = _waiting_segments(prompts[:2])
    Segment.objects.filter(pk=segments[1].pk).update(audio="segments/missing.wav")

    first = recognize_segment.delay(segment_id=segments[0].pk, endpoint_at=None).get(timeout=TIMEOUT_S)

    assert first["status"] == "recognized"
    segments[1].refresh_from_db()
    assert segments[1].status == "failed" and "missing" in segments[1].failure_reason

"""recognition.segment batches waiting segments: a real worker, real Redis claims, the real
default recognizer."""

from __future__ import annotations

import pytest

from asr_core import defaults, engines
from asr_core.manifest import read_manifest
from callcenter import asr
from callcenter.calls import services
from callcenter.calls.models import Segment
from callcenter.ops import redisconn
from callcenter.streaming import speculation
from tasks import recognition
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


@pytest.mark.parametrize("live_margin_s, together", [(defaults.WHISPER_LIVE_MARGIN_S, False), (None, True)])
def test_a_batch_the_recognizer_would_only_loop_over_gives_each_final_when_it_is_done(prompts, monkeypatch,
                                                                                     live_margin_s, together):
    """The product's Whisper (live margin, int8 decoder) recognizes a batch segment by segment, so
    the worker takes each transcript (and stores and sends its final) as soon as it is done; with
    the whole window computed, one encoder batch serves them all."""
    rec = engines.load_engine("whisper-tiny", path=asr.whisper_checkpoint("whisper-tiny"),
                              settings=engines.EngineSettings(int8="decoder", live_margin_s=live_margin_s))
    assert rec.batch_shares_work is together
    segments = _waiting_segments(prompts)
    ready = [(s, None) for s in segments]
    audios = [asr.decode_audio(wav) for _, wav in prompts]
    given, real = [], asr.transcribe_batch
    monkeypatch.setattr(asr, "transcribe_batch", lambda r, a, **kw: given.append(len(a)) or real(r, a, **kw))
    digests = [speculation.digest(wav) for _, wav in prompts]
    out = recognition._transcripts(rec, None, ready, audios, digests, [(None, None)] * 3)
    first = next(out)
    assert first[0] == segments[0] and given == ([3] if together else [1])   # the first is out before the rest
    rest = list(out)
    assert [t[0] for t in rest] == segments[1:] and given == ([3] if together else [1, 1, 1])
    assert [t[3]["text"] for t in [first, *rest]] == [rec.transcribe(a, 8000).text for a in audios]
    assert not any(t[4] for t in [first, *rest]), "no speculation was offered"
    # Each kept as a speculation of its own audio: all taken, none recognized again.
    for t, digest in zip([first, *rest], digests):
        speculation.keep(segment_id=t[0].pk, wav_digest=digest, model="shipped", profile=None, transcript=t[3])
    given.clear()
    taken = list(recognition._transcripts(rec, None, ready, audios, digests, [(None, None)] * 3))
    assert given == [] and all(t[4] for t in taken)
    assert [t[3] for t in taken] == [t[3] for t in [first, *rest]]


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

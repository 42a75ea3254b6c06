"""Speculative finals (callcenter/streaming/speculation.py): a segment's audio offered during the
pause before its endpoint is recognized by a real worker, and its final takes that transcript only
when the stored audio, model and profile are the same."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

from asr_core.corpus.synth import render
from callcenter import asr
from callcenter.calls import services
from callcenter.calls.models import Segment
from callcenter.ops import redisconn
from callcenter.streaming import speculation
from callcenter.tools.demo import demo_speaker
from tasks.recognition import speculate

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_S = 60
FIRST, SECOND = "i would like to cancel my internet plan", "my account number is four five six"


@pytest.fixture(scope="module")
def wavs() -> tuple[bytes, bytes]:
    return asr.wav_bytes(render(demo_speaker(), FIRST, 3), 8000), asr.wav_bytes(render(demo_speaker(), SECOND, 4), 8000)


def _open_segment(phone: str) -> Segment:
    """A segment as the web process opens it at speech onset: no audio yet, pending."""
    customer = services.customer_create(phone=phone)
    call = services.call_start(protocol="twilio", external_id=f"MZ{phone[1:]}", customer_id=customer.pk)
    return services.segment_create(call_id=call.pk, index=0, start_ms=0, end_ms=0, sample_rate=8000)


def _kept(segment_id: int) -> dict:
    """The worker's kept speculation of a segment (waits for it)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        raw = redisconn.client().get(speculation.RESULT_KEY + str(segment_id))
        if raw is not None:
            return json.loads(raw)
        time.sleep(0.1)
    raise AssertionError(f"no speculation was kept for segment #{segment_id}")


def _finish_and_listen(segment: Segment, wav: bytes) -> dict:
    """Store the segment's audio at its endpoint (which queues its final) and return the final the
    call's group receives."""

    async def scenario() -> dict:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(f"call.{segment.call_id}", channel)
        try:
            await sync_to_async(services.segment_finish)(
                segment_id=segment.pk, end_ms=3000, audio=wav, endpoint_at=time.time()
            )
            return (await asyncio.wait_for(layer.receive(channel), timeout=TIMEOUT_S))["message"]
        finally:
            await layer.close_pools()

    return async_to_sync(scenario)()


def test_the_final_of_a_segment_whose_pause_lasted_is_the_speculation_and_equals_recognizing_it(celery_worker, wavs):
    spoken = _open_segment("+15557780001")
    assert speculation.offer(segment_id=spoken.pk, wav=wavs[0])
    kept = _kept(spoken.pk)
    assert kept["digest"] == speculation.digest(wavs[0]) and kept["transcript"]["text"]

    final = _finish_and_listen(spoken, wavs[0])

    spoken.refresh_from_db()
    assert final["speculative"] is True and final["text"] == spoken.text == kept["transcript"]["text"]
    assert spoken.status == "recognized" and spoken.words == kept["transcript"]["words"]
    assert redisconn.client().get(speculation.RESULT_KEY + str(spoken.pk)) is None, "taken once"
    # The same audio recognized at its endpoint without a speculation: the same final.
    plain = _open_segment("+15557780002")
    again = _finish_and_listen(plain, wavs[0])
    plain.refresh_from_db()
    assert "speculative" not in again and (plain.text, plain.words) == (spoken.text, spoken.words)


def test_a_speculation_of_other_audio_is_never_the_final(celery_worker, wavs):
    segment = _open_segment("+15557780003")
    assert speculation.offer(segment_id=segment.pk, wav=wavs[0])
    kept = _kept(segment.pk)

    # Speech came back (or the segment was cut at its maximum length): the stored audio is other.
    final = _finish_and_listen(segment, wavs[1])

    reference = _open_segment("+15557780004")
    expected = _finish_and_listen(reference, wavs[1])
    assert "speculative" not in final and final["text"] == expected["text"] != kept["transcript"]["text"]


def test_a_withdrawn_offer_is_not_recognized(celery_worker, wavs):
    segment = _open_segment("+15557780005")
    audio = base64.b64encode(wavs[0]).decode()
    redisconn.client().set(speculation.OFFER_KEY + str(segment.pk), speculation.digest(wavs[0]), ex=60)
    speculation.withdraw(segment_id=segment.pk)

    assert speculate.delay(segment_id=segment.pk, audio=audio).get(timeout=TIMEOUT_S) == "skipped"
    assert redisconn.client().get(speculation.RESULT_KEY + str(segment.pk)) is None


@pytest.mark.parametrize("audio", ["not base64!", base64.b64encode(b"RIFF but not a wav").decode()])
def test_bad_offered_audio_is_skipped_or_fails_without_touching_the_segment(celery_worker, audio):
    segment = _open_segment("+15557780006")
    raw = base64.b64decode(audio, validate=False) if audio != "not base64!" else b""
    redisconn.client().set(speculation.OFFER_KEY + str(segment.pk), speculation.digest(raw), ex=60)

    outcome = speculate.delay(segment_id=segment.pk, audio=audio).get(timeout=TIMEOUT_S)

    assert outcome == ("skipped" if audio == "not base64!" else "failed")
    segment.refresh_from_db()
    assert segment.status == "pending" and not segment.audio and segment.failure_reason == ""


def test_a_segment_already_recognized_is_not_speculated_on(celery_worker, wavs):
    segment = _open_segment("+15557780007")
    _finish_and_listen(segment, wavs[0])
    audio = base64.b64encode(wavs[0]).decode()
    redisconn.client().set(speculation.OFFER_KEY + str(segment.pk), speculation.digest(wavs[0]), ex=60)

    assert speculate.delay(segment_id=segment.pk, audio=audio).get(timeout=TIMEOUT_S) == "skipped"


def _record(**overrides) -> str:
    record = {"digest": "d" * 64, "model": "version:1", "profile": 5, "transcript": {"text": "kept"}}
    return json.dumps(record | overrides)


@pytest.mark.parametrize(
    "stored, hit",
    [
        (_record(), True),
        (_record(digest="e" * 64), False),  # other audio
        (_record(model="version:2"), False),  # another model version
        (_record(profile=None), False),  # the caller's profile changed
        ("{not json", False),
        (json.dumps({"digest": "d" * 64}), False),
    ],
)
def test_a_kept_speculation_is_taken_only_for_the_same_audio_model_and_profile(stored, hit):
    r = redisconn.client()
    r.set(speculation.RESULT_KEY + "424242", stored, ex=60)

    taken = speculation.take(segment_id=424242, wav_digest="d" * 64, model="version:1", profile=5)

    assert taken == ({"text": "kept"} if hit else None)
    assert r.get(speculation.RESULT_KEY + "424242") is None, "read once, whatever it held"

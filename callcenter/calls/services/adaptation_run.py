"""The rules of one caller adaptation run (the ``adaptation.customer`` task calls
``adaptation_run_execute`` and keeps only retries, the time limit and error translation):

- the caller's most recent customer-track segments with audio (``ADAPTATION_MAX_SEGMENTS``);
  supervised on the verified transcripts where there are any, otherwise label-free;
- a Whisper backbone adapts only in the modes ``ADAPTATION_WHISPER`` allows;
- label-free waits for ``LABEL_FREE_MIN_SEGMENTS`` segments;
- one try: from the caller's usable profile where there is one, else from where the backbone
  starts a new caller (the meta-learned init); the result must have strictly fewer held-out
  errors (or a better confidence) than the profile in use. (Until 2026-12-06 a caller with a
  profile was also tried from the meta-learned init, at twice the cost; on the real speaker's
  development prompts and 6 synthetic callers that try was never the one kept:
  ``bench/whisper_returning.py``, asr_core/WHISPER.md);
- the backbone's own adaptation procedure and guard (``rec.adapt``, ``rec.adaptation_config``:
  asr_core decides how each backbone adapts).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

from callcenter import asr, privacy
from callcenter.errors import AdaptationFailed, BadAudio

from .. import selectors
from ..models import AdaptationRun, Segment
from .adaptation import adaptation_run_finish, adaptation_run_start
from .model_versions import backbone_model

logger = logging.getLogger(__name__)

# Label-free adaptation needs this many segments (the guard holds out chunks of 2, each judged by
# an adaptation on the rest).
LABEL_FREE_MIN_SEGMENTS = 6
ALLOWED_WHISPER_MODES = {"off": (), "supervised": ("supervised",), "all": ("supervised", "label-free")}


def adaptation_run_execute(*, run_id: int) -> dict[str, object]:
    """Run one adaptation (a run that already finished is not run again); returns ``{"run",
    "status", "profile_version", "metrics", "outcome"}``. ``AdaptationFailed`` when there is
    nothing to adapt on; ``Conflict`` when another adaptation stored a profile meanwhile."""
    started = time.perf_counter()
    run = adaptation_run_start(run_id=run_id)
    if run is None:
        done = selectors.adaptation_run_get(run_id=run_id)
        return {"run": run_id, "status": done.status, "already_done": True}
    version, rec = backbone_model(backbone=run.backbone, decoder=settings.ASR_DECODER)
    mode, audios, texts, stored, scored = _inputs(run, rec)
    current = selectors.voice_profile_latest(customer_id=run.customer_id, model_version_id=version.pk)
    refusal = _refusal(rec, mode, len(audios))
    if refusal:
        figures = {"mode": mode, "segments": len(audios), "model_version": version.name}
        return _finish(run, version, mode, figures=figures, state=None, current=None, reason=refusal)
    cfg = rec.adaptation_config(mode, len(audios))
    refs = texts if mode == "supervised" else None
    start = _current_params(rec, current, run_id)
    scores = _usable_scores(rec, scored, current.pk if start is not None else None) if mode == "label-free" else None
    tried = {"init" if start is None else "current":
             rec.adapt(audios, refs, rec.sample_rate, start=start, cfg=cfg, hypotheses=stored,
                       hypothesis_scores=scores)}
    started_from, result = choose(tried)
    figures = {
        **result.metrics,
        "mode": mode,
        "segments": len(audios),
        "started_from": started_from,
        "tried": {name: held_out_error(r.metrics) for name, r in tried.items()},
        "model_version": version.name,
        "backbone": version.backbone,
        "seconds": round(sum(r.metrics.get("seconds", 0) for r in tried.values()), 3),
        "task_seconds": round(time.perf_counter() - started, 3),
    }
    state = None
    if result.accepted:
        state = asr.profile_bytes(rec, params=result.params, version=(current.version if current else 0) + 1,
                                  metrics_=figures)
    reason = "" if result.accepted else figures.get("reason", "the adapted profile was worse on held-out audio")
    return _finish(run, version, mode, figures=figures, state=state, current=current, reason=reason)


def _usable_scores(rec, scored: list[tuple], profile_id: int | None) -> list[float | None] | None:
    """Each stored text's search score where the adaptation can stand it for a new search of the
    segment with the caller's current params: made under this recognizer's scoring key (weights
    and decoding settings) with the profile the run starts from (``profile_id``; None: the base
    model), both in the segment's ``scored_by`` (``asr.score_key``). Else None for that segment
    (the guard searches it again)."""
    key = asr.score_key(rec.scoring_key, profile_id)
    if not key:
        return None
    usable = [a if a is not None and by == key else None for a, by, _ in scored]
    if any(a is None for a in usable):
        logger.info("%d of %d stored scores usable (key %s: profile %s; the segments' keys and profiles: %s)",
                    sum(a is not None for a in usable), len(usable), key, profile_id,
                    sorted({(by, pid) for _, by, pid in scored}, key=str))
    return usable


def _inputs(run: AdaptationRun, rec) -> tuple[str, list, list[str], list[str], list[tuple]]:
    """(mode, audios, reference texts, stored texts, the stored texts' (score, scoring key,
    profile id)) of the run's caller."""
    segments = selectors.customer_adaptation_segments(customer_id=run.customer_id, limit=settings.ADAPTATION_MAX_SEGMENTS)
    if not segments:
        raise AdaptationFailed(f"customer #{run.customer_id} has no stored audio: there is nothing to adapt on")
    verified = [s for s in segments if s.is_verified and s.verified_text and not privacy.is_redacted(s.verified_text)]
    mode = "supervised" if verified else "label-free"
    chosen = verified or segments
    audios, texts, stored, scored = _load(chosen, rec)
    if not audios:
        raise AdaptationFailed(f"none of customer #{run.customer_id}'s {len(chosen)} audio files could be read")
    return mode, audios, texts, stored, scored


def _refusal(rec, mode: str, segments: int) -> str:
    """Why this run makes no profile at all, or ''."""
    if rec.pretrained_on_real_speech and mode not in ALLOWED_WHISPER_MODES[settings.ADAPTATION_WHISPER]:
        return f"{mode} adaptation of Whisper is off (ADAPTATION_WHISPER={settings.ADAPTATION_WHISPER})"
    if mode == "label-free" and segments < LABEL_FREE_MIN_SEGMENTS:
        # Few unverified segments give a noisy guard and noisy pseudo-labels: wait for more.
        return (f"only {segments} unverified segment(s): label-free adaptation waits for "
                f"{LABEL_FREE_MIN_SEGMENTS} (or verified transcripts)")
    return ""


def _current_params(rec, current, run_id: int):
    """The caller's current profile's parameters (a second starting point), or None."""
    if current is None:
        return None
    params = asr.profile_params(rec, profile_id=current.pk, load_state=lambda: current.state)
    if params is None:
        logger.warning("adaptation run #%s: the current profile v%s is unusable; adapting from the meta-learned init",
                       run_id, current.version)
    return params


def _finish(run: AdaptationRun, version, mode: str, *, figures: dict, state: bytes | None, current,
            reason: str) -> dict[str, object]:
    accepted = state is not None
    done = adaptation_run_finish(
        run_id=run.pk, model_version_id=version.pk, mode=mode, accepted=accepted, metrics=figures, state=state,
        expected_version=current.version if current is not None else None, reason=reason,
    )  # fmt: skip
    outcome = "accepted" if accepted else "rejected"
    logger.info("adaptation run #%s of customer #%s: %s %s", run.pk, run.customer_id, outcome, reason or figures)
    return {"run": run.pk, "status": done.status, "outcome": outcome,
            "profile_version": done.profile.version if done.profile else None, "metrics": figures}


def held_out_error(figures: dict) -> float | None:
    """The guard's held-out error after adaptation: WER (supervised) or 1 - mean confidence
    (label-free; Whisper: minus the mean token log-prob); None without held-out segments."""
    return _error(figures, "after")


def _error(figures: dict, when: str) -> float | None:
    if f"wer_{when}" in figures:
        return float(figures[f"wer_{when}"])
    if f"logprob_{when}" in figures:
        return round(-float(figures[f"logprob_{when}"]), 4)
    if f"conf_{when}" in figures:
        return round(1 - float(figures[f"conf_{when}"]), 4)
    return None


def choose(tried: dict) -> tuple[str, object]:
    """The accepted adaptation with the lowest held-out error, strictly below the profile in use
    (the "current" run's starting point, else the base model); else the run that started from the
    profile in use (else the init run), marked not accepted. A run the guard could not check
    (nothing held out) is not accepted."""
    baseline = _error((tried["current"] if "current" in tried else tried["init"]).metrics, "before")
    accepted = [
        (name, r) for name, r in tried.items()
        if r.accepted and held_out_error(r.metrics) is not None
        and (baseline is None or held_out_error(r.metrics) < baseline)
    ]  # fmt: skip
    if accepted:
        return min(accepted, key=lambda item: (held_out_error(item[1].metrics) or 0.0, item[0] != "init"))
    name = "current" if "current" in tried else "init"
    result = tried[name]
    if result.accepted and held_out_error(result.metrics) is None:
        result.metrics["reason"] = (
            f"only {result.metrics.get('utterances', 0)} usable segment(s): nothing left to hold out for the guard"
        )
    result.accepted = False
    return name, result


def _load(segments: list[Segment], rec) -> tuple[list, list[str], list[str], list[tuple]]:
    """Audio at the model's rate, reference texts (as the backbone is taught them), stored texts
    and their (score, scoring key, profile id) of the segments whose audio is readable (an
    unreadable one is logged and skipped)."""
    audios, texts, stored, scored = [], [], [], []
    for segment in segments:
        try:
            with segment.audio.open("rb") as f:
                audio = asr.decode_audio(f.read(), rec.sample_rate)
        except (FileNotFoundError, BadAudio) as exc:
            logger.warning("segment #%s: audio unusable for adaptation: %s", segment.pk, exc)
            continue
        text = rec.reference_text(segment.verified_text) if segment.is_verified else ""
        if audio.numel() < rec.sample_rate // 4 or (segment.is_verified and not text):
            continue
        audios.append(audio)
        texts.append(text)
        stored.append(segment.text or "")
        scored.append((segment.avg_logprob, segment.scored_by, segment.voice_profile_id))
    return audios, texts, stored, scored

"""Periodic meta-training over customers (the ``training.meta_train`` task;
Celery beat runs it every ``TRAINING_INTERVAL_S``, ``manage.py
meta_train_customers`` runs it by hand): its runs, its rules, and promoting
a candidate that beat its parent.

1. Enough new verified audio? The verified segments since the last
   finished meta-training must add up to ``TRAINING_MIN_NEW_VERIFIED_S``
   seconds; otherwise the run is recorded as ``skipped``.
2. Customers with verified audio are tasks: a deterministic quarter of them
   (at least one) is held out for evaluation, the rest meta-train the
   active model's adaptable initialization and step sizes (asr_core's
   ``MetaLearner``, the algorithm and inner steps of the active
   checkpoint; support = half of a customer's utterances, query = the other
   half). The model side is asr_core's, through the bridge
   (``asr.meta_train_candidate``, ``asr.held_out_wer``).
3. Evaluation on the held-out customers' verified audio: each model adapts
   on the first half of a customer's utterances and is scored (WER) on the
   other half. The candidate is promoted only when its WER is lower: its
   checkpoint is written under ``MODEL_DIR`` with its SHA-256, verified,
   recorded as a new ``ModelVersion`` (parent: the current one), made
   active, and every caller with audio is re-adapted for it in the
   background. Otherwise nothing changes (``rejected``).

A model version whose checkpoint is missing or holds other weights fails the
run with that reason; nothing is changed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from callcenter import asr
from callcenter.errors import CallCenterError, ModelVersionInvalid
from callcenter.ops import metrics

from ..models import AdaptationRun, ModelVersion, Segment, TrainingRun
from ..selectors.training import verified_segments_since
from .model_versions import active_model
from ._common import require_choice
from .adaptation import adaptation_request
from .model_versions import model_version_check, model_version_promote, model_version_register

logger = logging.getLogger(__name__)

MIN_UTTERANCES = 4  # a customer needs this many verified segments to be a task


@dataclass(frozen=True)
class TrainingConfig:
    outer_steps: int
    min_new_verified_s: int
    meta_batch: int = 4
    outer_lr: float = 3e-3
    seed: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        if self.outer_steps < 1:
            raise ValueError(f"outer_steps must be >= 1, got {self.outer_steps}")
        if self.min_new_verified_s < 0:
            raise ValueError(f"min_new_verified_s must be >= 0, got {self.min_new_verified_s}")
        if self.meta_batch < 1 or not self.outer_lr > 0:
            raise ValueError("meta_batch must be >= 1 and outer_lr > 0")


def training_config(**overrides: object) -> TrainingConfig:
    """The settings' configuration (``TRAINING_OUTER_STEPS``,
    ``TRAINING_MIN_NEW_VERIFIED_S``) with the overrides that are not None."""
    values: dict[str, object] = {
        "outer_steps": settings.TRAINING_OUTER_STEPS,
        "min_new_verified_s": settings.TRAINING_MIN_NEW_VERIFIED_S,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainingConfig(**values)  # type: ignore[arg-type]


def training_run_start(*, base_id: int | None) -> TrainingRun:
    return TrainingRun.objects.create(base_id=base_id, status=TrainingRun.Status.RUNNING)


def training_run_finish(
    *,
    run_id: int,
    status: str,
    metrics: Mapping[str, object] | None = None,
    reason: str = "",
    candidate_id: int | None = None,
) -> TrainingRun:
    require_choice(status, TrainingRun.Status, "status")
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        run.status = status
        run.metrics = dict(metrics or {})
        run.reason = reason
        run.candidate_id = candidate_id
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "metrics", "reason", "candidate", "finished_at"])
        return run


def model_version_create_promoted(
    *, name: str, checkpoint: str, sha256: str, parent_id: int | None, metrics: Mapping[str, object]
) -> ModelVersion:
    """Record a meta-trained version that beat its parent, verify its
    checkpoint, promote it, and queue re-adaptation of every caller with
    audio for it (in the background)."""
    version = model_version_register(name=name, checkpoint=checkpoint, sha256=sha256, metrics=metrics)
    if parent_id is not None:
        ModelVersion.objects.filter(pk=version.pk).update(parent_id=parent_id)
    version = model_version_promote(model_version_id=version.pk, check=True)
    customers = (
        Segment.objects.exclude(audio="").filter(call__customer__isnull=False)
        .values_list("call__customer_id", flat=True).distinct()
    )  # fmt: skip
    for customer_id in sorted(set(customers)):
        adaptation_request(customer_id=customer_id, trigger=AdaptationRun.Trigger.PROMOTION)
    return version


def meta_training_run(
    *, cfg: TrainingConfig, time_limit_errors: tuple[type[BaseException], ...] = ()
) -> TrainingRun:
    """One meta-training round (see the module docstring); always returns
    the recorded ``TrainingRun``. An exception in ``time_limit_errors`` (the
    task's soft time limit) fails the run as "time limit exceeded"."""
    busy = TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING,
        created__gt=timezone.now() - dt.timedelta(seconds=settings.TRAINING_TIME_LIMIT_S + 60),
    ).first()
    if busy is not None:
        run = training_run_start(base_id=busy.base_id)
        return training_run_finish(
            run_id=run.pk, status=TrainingRun.Status.SKIPPED, reason=f"meta-training #{busy.pk} is still running"
        )
    try:
        base, _rec = active_model(decoder="greedy")
    except ModelVersionInvalid as exc:
        run = training_run_start(base_id=exc.details.get("model_version_id"))
        metrics.TRAININGS.labels("failed").inc()
        return training_run_finish(run_id=run.pk, status=TrainingRun.Status.FAILED, reason=exc.message)
    run = training_run_start(base_id=base.pk)
    started = time.perf_counter()
    try:
        model_version_check(model_version=base)
        status, reason, figures, candidate_id = _train_and_gate(cfg, base)
    except time_limit_errors:
        status, reason, figures, candidate_id = "failed", "time limit exceeded", {}, None
    except CallCenterError as exc:
        status, reason, figures, candidate_id = "failed", exc.message, {}, None
    except Exception as exc:
        logger.exception("meta-training #%s crashed", run.pk)
        status, reason, figures, candidate_id = "failed", f"internal error: {type(exc).__name__}: {exc}", {}, None
    figures = {**figures, "seconds": round(time.perf_counter() - started, 1)}
    metrics.TRAININGS.labels(status).inc()
    logger.info("meta-training #%s: %s %s %s", run.pk, status, reason, figures)
    return training_run_finish(run_id=run.pk, status=status, metrics=figures, reason=reason, candidate_id=candidate_id)


def _train_and_gate(cfg: TrainingConfig, base: ModelVersion) -> tuple[str, str, dict, int | None]:
    """(status, reason, figures, promoted version id) of one round on the
    active version ``base``: skipped, rejected or promoted."""
    new_s = _new_verified_seconds()
    figures: dict[str, object] = {"new_verified_seconds": round(new_s, 1)}
    if new_s < cfg.min_new_verified_s and not cfg.force:
        return "skipped", f"{new_s:.0f} s of newly verified audio, {cfg.min_new_verified_s} s needed", figures, None
    by_customer = _verified_by_customer()
    train_ids, held_ids = _split(sorted(by_customer))
    figures.update({"train_customers": len(train_ids), "held_out_customers": len(held_ids)})
    if not train_ids or not held_ids:
        reason = (
            f"{len(by_customer)} customer(s) have {MIN_UTTERANCES}+ verified segments; "
            "at least 2 are needed (one to train on, one held out)"
        )
        return "skipped", reason, figures, None
    current = asr.meta_recognizer(checkpoint=base.checkpoint, sha256=base.sha256, name=base.name)
    provenance = {
        "parent": base.name,
        "outer_steps": cfg.outer_steps,
        "train_customers": len(train_ids),
        "utterances": sum(len(by_customer[c]) for c in train_ids),
    }
    with tempfile.TemporaryDirectory(dir=_model_dir()) as tmp:
        candidate = asr.meta_train_candidate(
            current, {c: by_customer[c] for c in train_ids}, outer_steps=cfg.outer_steps, meta_batch=cfg.meta_batch,
            outer_lr=cfg.outer_lr, seed=cfg.seed, folder=tmp, provenance=provenance,
        )
        held = {c: by_customer[c] for c in held_ids}
        figures["current_wer"] = asr.held_out_wer(current, held)
        figures["candidate_wer"] = asr.held_out_wer(candidate.recognizer, held)
        figures["held_out_utterances"] = sum(len(v) // 2 for v in held.values())
        if not figures["candidate_wer"] < figures["current_wer"]:
            reason = (
                f"candidate WER {figures['candidate_wer']:.4f} is not below the current "
                f"{figures['current_wer']:.4f}: the current model stays"
            )
            return "rejected", reason, figures, None
        name = f"meta-{timezone.now():%Y%m%d-%H%M%S}-{candidate.sha256[:8]}"
        final_path = os.path.join(_model_dir(), f"{name}.pt")
        os.replace(candidate.path, final_path)
    version = model_version_create_promoted(
        name=name, checkpoint=final_path, sha256=candidate.sha256, parent_id=base.pk, metrics=figures
    )
    return "promoted", f"{name} promoted: held-out WER {figures['current_wer']} -> {figures['candidate_wer']}", figures, version.pk


def _new_verified_seconds() -> float:
    last = (
        TrainingRun.objects.filter(status__in=[TrainingRun.Status.PROMOTED, TrainingRun.Status.REJECTED])
        .order_by("-finished_at")
        .first()
    )
    total = verified_segments_since(since=last.finished_at if last else None).aggregate(
        ms=Sum(F("end_ms") - F("start_ms"))
    )["ms"]
    return (total or 0) / 1000


def _model_dir() -> str:
    os.makedirs(settings.MODEL_DIR, exist_ok=True)
    return settings.MODEL_DIR


def _verified_by_customer() -> dict[int, list[tuple[str, str]]]:
    """customer id -> [(audio file path, normalized verified text)], in call order."""
    groups: dict[int, list[tuple[str, str]]] = defaultdict(list)
    rows = (
        verified_segments_since(since=None)
        .filter(call__customer__isnull=False)
        .select_related("call")
        .order_by("call__customer_id", "call__started_at", "index")
    )
    for segment in rows:
        text = asr.normalize_text(segment.verified_text)
        if text and "[" not in segment.verified_text and _exists(segment):
            groups[segment.call.customer_id].append((segment.audio.path, text))
    return {c: items for c, items in groups.items() if len(items) >= MIN_UTTERANCES}


def _exists(segment: Segment) -> bool:
    try:
        return os.path.isfile(segment.audio.path)
    except (ValueError, NotImplementedError):
        return False


def _split(customers: list[int]) -> tuple[list[int], list[int]]:
    """(train, held out): every fourth customer is held out, at least one."""
    if len(customers) < 2:
        return customers, []
    held = customers[::4] if len(customers) >= 4 else customers[-1:]
    return [c for c in customers if c not in held], held

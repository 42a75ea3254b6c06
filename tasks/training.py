"""Periodic meta-training over customers (``training.meta_train``; Celery
beat runs it every ``TRAINING_INTERVAL_S``, ``manage.py
meta_train_customers`` runs it by hand).

1. Enough new verified audio? The verified segments since the last
   finished meta-training must add up to ``TRAINING_MIN_NEW_VERIFIED_S``
   seconds; otherwise the run is recorded as ``skipped``.
2. Customers with verified audio are tasks: a deterministic quarter of them
   (at least one) is held out for evaluation, the rest meta-train the
   active model's adaptable initialization and step sizes (asr_core's
   ``MetaLearner``, the algorithm and inner steps of the active
   checkpoint; support = half of a customer's utterances, query = the other
   half).
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
import math
import os
import random
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db.models import F, Sum
from django.utils import timezone

from callcenter.ops import metrics
from callcenter.calls import selectors, services
from callcenter.calls.models import Segment, TrainingRun
from callcenter.errors import CallCenterError, ModelVersionInvalid, TrainingFailed

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


def default_config(**overrides: object) -> TrainingConfig:
    values: dict[str, object] = {
        "outer_steps": settings.TRAINING_OUTER_STEPS,
        "min_new_verified_s": settings.TRAINING_MIN_NEW_VERIFIED_S,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainingConfig(**values)  # type: ignore[arg-type]


# Acknowledged when it starts, and never given back when its worker dies
# (no acks_late, no reject_on_worker_lost): it runs for hours, far past the
# broker-wide visibility timeout (a late-acked run would be started again
# by a second worker every minute), and a training that took its worker down
# (out of memory) would only take the next one down too. Beat asks again at
# its next interval.
@shared_task(
    name="training.meta_train",
    soft_time_limit=settings.TRAINING_TIME_LIMIT_S,
    time_limit=settings.TRAINING_TIME_LIMIT_S + 60,
    acks_late=False,
    reject_on_worker_lost=False,
)
def meta_train_customers(*, outer_steps: int | None = None, force: bool = False) -> dict[str, object]:
    """Beat's entry point; returns ``{"run", "status", "reason", "metrics"}``."""
    run = run_meta_training(default_config(outer_steps=outer_steps, force=force))
    return {"run": run.pk, "status": run.status, "reason": run.reason, "metrics": run.metrics}


def run_meta_training(cfg: TrainingConfig) -> TrainingRun:
    """One meta-training round (see the module docstring); always returns
    the recorded ``TrainingRun``."""
    from callcenter.asr import active_model

    busy = TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING,
        created__gt=timezone.now() - dt.timedelta(seconds=settings.TRAINING_TIME_LIMIT_S + 60),
    ).first()
    if busy is not None:
        run = services.training_run_start(base_id=busy.base_id)
        return services.training_run_finish(
            run_id=run.pk, status=TrainingRun.Status.SKIPPED, reason=f"meta-training #{busy.pk} is still running"
        )
    try:
        base, _rec = active_model(decoder="greedy")
    except ModelVersionInvalid as exc:
        run = services.training_run_start(base_id=exc.details.get("model_version_id"))
        metrics.TRAININGS.labels("failed").inc()
        return services.training_run_finish(run_id=run.pk, status=TrainingRun.Status.FAILED, reason=exc.message)
    run = services.training_run_start(base_id=base.pk)
    started = time.perf_counter()
    try:
        services.model_version_check(model_version=base)
        status, reason, figures, candidate_id = _train_and_gate(cfg, base)
    except SoftTimeLimitExceeded:
        status, reason, figures, candidate_id = "failed", "time limit exceeded", {}, None
    except CallCenterError as exc:
        status, reason, figures, candidate_id = "failed", exc.message, {}, None
    except Exception as exc:
        logger.exception("meta-training #%s crashed", run.pk)
        status, reason, figures, candidate_id = "failed", f"internal error: {type(exc).__name__}: {exc}", {}, None
    figures = {**figures, "seconds": round(time.perf_counter() - started, 1)}
    metrics.TRAININGS.labels(status).inc()
    logger.info("meta-training #%s: %s %s %s", run.pk, status, reason, figures)
    return services.training_run_finish(
        run_id=run.pk, status=status, metrics=figures, reason=reason, candidate_id=candidate_id
    )


def _new_verified_seconds() -> float:
    last = (
        TrainingRun.objects.filter(status__in=[TrainingRun.Status.PROMOTED, TrainingRun.Status.REJECTED])
        .order_by("-finished_at")
        .first()
    )
    total = selectors.verified_segments_since(since=last.finished_at if last else None).aggregate(
        ms=Sum(F("end_ms") - F("start_ms"))
    )["ms"]
    return (total or 0) / 1000


def _train_and_gate(cfg: TrainingConfig, base) -> tuple[str, str, dict, int | None]:
    import torch

    from asr_core.recognizer import Recognizer

    new_s = _new_verified_seconds()
    figures: dict[str, object] = {"new_verified_seconds": round(new_s, 1)}
    if new_s < cfg.min_new_verified_s and not cfg.force:
        return (
            "skipped",
            f"{new_s:.0f} s of newly verified audio, {cfg.min_new_verified_s} s needed",
            figures,
            None,
        )
    by_customer = _verified_by_customer()
    train_ids, held_ids = _split(sorted(by_customer))
    figures.update({"train_customers": len(train_ids), "held_out_customers": len(held_ids)})
    if not train_ids or not held_ids:
        return (
            "skipped",
            f"{len(by_customer)} customer(s) have {MIN_UTTERANCES}+ verified segments; "
            "at least 2 are needed (one to train on, one held out)",
            figures,
            None,
        )
    torch.manual_seed(cfg.seed)
    current = Recognizer.load(base.checkpoint, decoder=settings.ASR_DECODER)
    if current.meta["sha256"] != base.sha256:
        raise ModelVersionInvalid(f"model version {base.name!r}: the checkpoint holds other weights")
    candidate_model, adapt_section = _meta_learn(cfg, current, {c: by_customer[c] for c in train_ids})
    with tempfile.TemporaryDirectory(dir=_model_dir()) as tmp:
        from asr_core.checkpoint import save_checkpoint

        meta = {k: v for k, v in current.meta.items() if k not in ("sha256", "path", "adapt")}
        meta["meta_train_customers"] = {
            "parent": base.name,
            "outer_steps": cfg.outer_steps,
            "train_customers": len(train_ids),
            "utterances": sum(len(by_customer[c]) for c in train_ids),
        }
        tmp_path = os.path.join(tmp, "candidate.pt")
        sha = save_checkpoint(candidate_model, tmp_path, meta=meta, adapt=adapt_section)
        candidate = Recognizer.load(tmp_path, decoder=settings.ASR_DECODER)
        held = {c: by_customer[c] for c in held_ids}
        figures["current_wer"] = _held_out_wer(current, held)
        figures["candidate_wer"] = _held_out_wer(candidate, held)
        figures["held_out_utterances"] = sum(len(v) // 2 for v in held.values())
        if not figures["candidate_wer"] < figures["current_wer"]:
            return (
                "rejected",
                f"candidate WER {figures['candidate_wer']:.4f} is not below the current "
                f"{figures['current_wer']:.4f}: the current model stays",
                figures,
                None,
            )
        name = f"meta-{timezone.now():%Y%m%d-%H%M%S}-{sha[:8]}"
        final_path = os.path.join(_model_dir(), f"{name}.pt")
        os.replace(tmp_path, final_path)
    version = services.model_version_create_promoted(
        name=name, checkpoint=final_path, sha256=sha, parent_id=base.pk, metrics=figures
    )
    return "promoted", f"{name} promoted: held-out WER {figures['current_wer']} -> {figures['candidate_wer']}", figures, version.pk


def _model_dir() -> str:
    os.makedirs(settings.MODEL_DIR, exist_ok=True)
    return settings.MODEL_DIR


def _verified_by_customer() -> dict[int, list[tuple[str, str]]]:
    """customer id -> [(audio file path, normalized verified text)], in call order."""
    from asr_core.text import normalize

    groups: dict[int, list[tuple[str, str]]] = defaultdict(list)
    rows = (
        selectors.verified_segments_since(since=None)
        .filter(call__customer__isnull=False)
        .select_related("call")
        .order_by("call__customer_id", "call__started_at", "index")
    )
    for segment in rows:
        text = normalize(segment.verified_text)
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


def _load(items: list[tuple[str, str]], sample_rate: int):
    from asr_core.audio import load_audio

    return [load_audio(path, sample_rate) for path, _ in items], [text for _, text in items]


def _meta_learn(cfg: TrainingConfig, rec, tasks: dict[int, list[tuple[str, str]]]):
    """Meta-train a copy of ``rec``'s model over the customers in ``tasks``;
    returns (model, adapt section for the checkpoint)."""
    import torch

    from asr_core.checkpoint import load_checkpoint
    from asr_core.meta import MetaLearner, adaptation_init, initial_params, load_params, make_batch

    model, meta = load_checkpoint(rec.meta["path"])
    model.eval()
    # The model keeps the adaptive group's pre-meta values (what callers without a profile get);
    # meta-learning moves the checkpoint's adaptation init, which goes back into the adapt section.
    start = initial_params(model)
    load_params(model, adaptation_init(model, meta))
    adapt = meta.get("adapt") or {"algo": "metasgd", "steps": 3, "step_sizes": 1.0}
    learner = MetaLearner(model, adapt["algo"], 1.0, lhuc_lr=50.0)
    sizes = adapt["step_sizes"]
    with torch.no_grad():
        for key, log_lr in learner.log_lr.items():
            size = sizes[key.replace("__", ".")] if isinstance(sizes, dict) else torch.tensor(float(sizes))
            log_lr.copy_(torch.log(size.float().clamp_min(1e-8)).expand_as(log_lr))
    groups = [{"params": g["params"], "lr": cfg.outer_lr} for g in learner.outer_parameters()]
    opt = torch.optim.Adam(groups) if adapt["algo"] != "reptile" else torch.optim.SGD(groups)
    batches = {}
    for customer, items in tasks.items():
        audios, texts = _load(items, model.cfg.sample_rate)
        half = max(1, len(audios) // 2)
        batches[customer] = (make_batch(model, audios[:half], texts[:half]), make_batch(model, audios[half:], texts[half:]))
    rng = random.Random(cfg.seed)
    customers = sorted(batches)
    steps = int(adapt["steps"])
    for _ in range(cfg.outer_steps):
        opt.zero_grad(set_to_none=True)
        chosen = rng.sample(customers, min(cfg.meta_batch, len(customers)))
        for customer in chosen:
            support, query = batches[customer]
            loss = learner.task_loss(support, query, steps, scale=1.0 / len(chosen))
            if not math.isfinite(float(loss)):
                raise TrainingFailed(f"meta-training diverged (query loss {float(loss)})")
        opt.step()
    learned = learner.step_sizes()
    section = {
        "algo": adapt["algo"],
        "steps": steps,
        "step_sizes": {k: v.detach().clone() for k, v in learned.items()}
        if adapt["algo"] == "metasgd" or isinstance(sizes, dict)
        else float(sizes),
        "init": initial_params(model),
    }
    load_params(model, start)
    return model, section


def _held_out_wer(rec, held: dict[int, list[tuple[str, str]]]) -> float:
    """Corpus WER on the second half of each held-out customer's utterances
    after supervised adaptation (no guard) on the first half."""
    from asr_core.adaptation import AdaptationConfig, adapt_caller
    from asr_core.metrics import wer

    pairs = []
    for items in held.values():
        audios, texts = _load(items, rec.sample_rate)
        half = max(1, len(audios) // 2)
        result = adapt_caller(rec, audios[:half], texts[:half], cfg=AdaptationConfig(mode="supervised", guard=False))
        for audio, text in zip(audios[half:], texts[half:]):
            pairs.append((text, rec.transcribe(audio, rec.sample_rate, params=result.params).text))
    return round(wer(pairs), 4)

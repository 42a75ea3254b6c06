"""Caller adaptation: which backbones adapt, scheduling runs (after a call, on
request) and storing their outcome with the caller's new profile."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from callcenter.errors import AdaptationFailed, Conflict, InvalidInput, InvalidState, NotFound

from ..models import AdaptationRun, Call, Customer, ModelVersion, Segment, VoiceProfile
from ._common import require_choice, require_permission
from .enqueue import adaptation_enqueue

logger = logging.getLogger(__name__)


def adaptation_backbones() -> list[str]:
    """Whose profiles a caller's adaptation updates: those of the backbones
    that recognize calls, the partials' (``ASR_PARTIAL_BACKBONE``) and the
    finals' (``ASR_FINAL_BACKBONE``), once each; a Whisper backbone only
    while ``ADAPTATION_WHISPER`` is not "off" (default "supervised")."""
    used = dict.fromkeys([settings.ASR_PARTIAL_BACKBONE, settings.ASR_FINAL_BACKBONE])
    return [b for b in used if b == ModelVersion.Backbone.SMALL or settings.ADAPTATION_WHISPER != "off"]


# Fewest usable segments an adaptation after a call needs: its guard adapts
# on some and judges the result on others held out, so with fewer a run can
# only fail ("no stored audio") or be rejected unchecked (tasks/adaptation.py).
ADAPTATION_MIN_SEGMENTS = 2


def _adaptation_usable_segments(*, customer_id: int) -> int:
    """The caller's segments an adaptation could use: audio stored and a
    recognition that did not fail (pending ones are still being recognized)."""
    return (
        Segment.objects.filter(call__customer_id=customer_id, speaker=Segment.Speaker.CUSTOMER)
        .exclude(audio="")
        .exclude(status=Segment.Status.FAILED)
        .count()
    )


def adaptation_schedule_after_call(*, call: Call) -> AdaptationRun | None:
    """Queue the adaptation of the call's customer once the transaction
    commits, one run per backbone (``adaptation_backbones``); once per call
    (a second hangup schedules nothing). Returns the first run; None (no
    run, no task) without a known caller, when no backbone in use adapts,
    or while the caller has fewer than ``ADAPTATION_MIN_SEGMENTS`` usable
    segments."""
    if call.customer_id is None or not adaptation_backbones():
        return None
    if _adaptation_usable_segments(customer_id=call.customer_id) < ADAPTATION_MIN_SEGMENTS:
        logger.info("call #%s: no adaptation of customer #%s: fewer than %d segments with usable audio",
                    call.pk, call.customer_id, ADAPTATION_MIN_SEGMENTS)  # fmt: skip
        return None
    runs = []
    with transaction.atomic():
        for backbone in adaptation_backbones():
            run, created = AdaptationRun.objects.get_or_create(
                call=call,
                trigger=AdaptationRun.Trigger.CALL_ENDED,
                backbone=backbone,
                defaults={"customer_id": call.customer_id},
            )
            if created:
                transaction.on_commit(partial(adaptation_enqueue, run_id=run.pk))
            runs.append(run)
    return runs[0]


def adaptation_request(
    *, customer_id: int, user: AbstractBaseUser | None = None, trigger: str = AdaptationRun.Trigger.MANUAL
) -> AdaptationRun:
    """Queue an adaptation of a caller (the admin's "re-adapt", a model
    promotion), one run per backbone as after a call (a promotion: the small
    model only); returns the small model's run. A caller without stored
    audio is refused (``AdaptationFailed``), nothing is queued."""
    if user is not None:
        require_permission(user, "calls.adapt_customer", "adapt callers' voice profiles")
    require_choice(trigger, AdaptationRun.Trigger, "trigger")
    if trigger == AdaptationRun.Trigger.CALL_ENDED:
        raise InvalidInput("adaptations after a call are scheduled when the call ends")
    if not Customer.objects.filter(pk=customer_id).exists():
        raise NotFound(f"customer #{customer_id} does not exist", customer_id=customer_id)
    if not Segment.objects.filter(call__customer_id=customer_id, speaker=Segment.Speaker.CUSTOMER).exclude(
        audio=""
    ).exists():
        raise AdaptationFailed(
            f"customer #{customer_id} has no stored audio: there is nothing to adapt on", customer_id=customer_id
        )
    # A new small-model version re-adapts small-model profiles only.
    backbones = [ModelVersion.Backbone.SMALL] if trigger == AdaptationRun.Trigger.PROMOTION else adaptation_backbones()
    if not backbones:
        raise InvalidState(
            "no recognizer in use adapts to callers: Whisper's adaptation is off (ADAPTATION_WHISPER=off), "
            "nothing was queued"
        )
    runs = []
    with transaction.atomic():
        for backbone in backbones:
            run = AdaptationRun.objects.create(
                customer_id=customer_id, trigger=trigger, backbone=backbone, requested_by=user
            )
            transaction.on_commit(partial(adaptation_enqueue, run_id=run.pk))
            runs.append(run)
    return runs[0]


def adaptation_run_start(*, run_id: int) -> AdaptationRun | None:
    """Mark a run as running; None when it already finished (a task that
    runs twice adapts once)."""
    with transaction.atomic():
        run = AdaptationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise NotFound(f"adaptation run #{run_id} does not exist", run_id=run_id)
        if run.status not in (AdaptationRun.Status.QUEUED, AdaptationRun.Status.RUNNING):
            return None
        run.status = AdaptationRun.Status.RUNNING
        run.save(update_fields=["status"])
        return run


def adaptation_run_fail(*, run_id: int, reason: str, metrics_: Mapping[str, object] | None = None) -> AdaptationRun:
    """Record why an adaptation did not run; the caller's profiles are untouched."""
    with transaction.atomic():
        run = AdaptationRun.objects.select_for_update().get(pk=run_id)
        run.status = AdaptationRun.Status.FAILED
        run.reason = reason
        run.metrics = dict(metrics_ or run.metrics or {})
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "reason", "metrics", "finished_at"])
        return run


def adaptation_run_finish(
    *,
    run_id: int,
    model_version_id: int,
    mode: str,
    accepted: bool,
    metrics: Mapping[str, object],
    state: bytes | None,
    expected_version: int | None,
    reason: str = "",
) -> AdaptationRun:
    """Store an adaptation's outcome, and its profile when the guard
    accepted it, as the next version for the model.

    Compare-and-set: ``expected_version`` is the profile version the
    adaptation started from (None: from the meta-learned init). If another
    adaptation stored a version meanwhile, ``Conflict`` is raised and
    nothing is stored: the caller adapts again from the newer version."""
    if accepted and not state:
        raise InvalidInput("an accepted adaptation needs the profile's state", run_id=run_id)
    with transaction.atomic():
        # Serializes profile versions per customer.
        run = AdaptationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise NotFound(f"adaptation run #{run_id} does not exist", run_id=run_id)
        Customer.objects.select_for_update().filter(pk=run.customer_id).first()
        profile = None
        if accepted:
            latest = VoiceProfile.objects.filter(
                customer_id=run.customer_id, model_version_id=model_version_id
            ).aggregate(latest=Max("version"))["latest"]
            if latest != expected_version:
                raise Conflict(
                    f"customer #{run.customer_id}'s profile moved from v{expected_version} to v{latest} "
                    "during the adaptation",
                    customer_id=run.customer_id,
                )
            profile = VoiceProfile.objects.create(
                customer_id=run.customer_id,
                model_version_id=model_version_id,
                version=(latest or 0) + 1,
                state=bytes(state or b""),
                metrics={**dict(metrics), "run": run.pk, "mode": mode},
            )
        run.status = AdaptationRun.Status.ACCEPTED if accepted else AdaptationRun.Status.REJECTED
        run.model_version_id = model_version_id
        run.mode = mode
        run.metrics = dict(metrics)
        run.profile = profile
        run.reason = reason
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "model_version", "mode", "metrics", "profile", "reason", "finished_at"])
        return run

